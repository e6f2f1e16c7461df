"""Builds Switchyard's demo models offline: corpus, tokenizer, training, export."""
