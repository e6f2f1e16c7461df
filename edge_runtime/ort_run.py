"""Two ways to run the decoder session: plain ``run`` with numpy, or IOBinding with device-resident KV.

``HostRunner`` feeds numpy arrays and gets numpy back: right for the CPU provider, where "device"
memory is host memory anyway. ``BoundRunner`` binds the past keys and values as ``OrtValue``s that
stay on the device and asks onnxruntime to allocate the presents there too, so a decode step moves
only token ids, mask and positions in and the logits out; the cache never crosses the bus between
steps. It works with any device onnxruntime can bind (``cuda``, and ``cpu`` for tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

Array = npt.NDArray[Any]


class Runner(Protocol):
    def run(self, feed: Mapping[str, Array], past: Sequence[Any]) -> tuple[Array, list[Any]]:
        """Run with the small inputs in ``feed`` and the flattened past; return logits and presents."""
        ...

    def upload(self, array: Array) -> Any:
        """``array`` in the form this runner keeps the cache in."""
        ...


class HostRunner:
    def __init__(
        self, session: ort.InferenceSession, past_names: Sequence[str], present_names: Sequence[str]
    ):
        self._session = session
        self._past_names = tuple(past_names)
        self._output_names = ["logits", *present_names]

    @property
    def past_names(self) -> tuple[str, ...]:
        return self._past_names

    def run(self, feed: Mapping[str, Array], past: Sequence[Any]) -> tuple[Array, list[Any]]:
        full = dict(feed)
        full.update(zip(self._past_names, past, strict=True))
        outputs = self._session.run(self._output_names, full)
        return np.asarray(outputs[0]), list(outputs[1:])

    def upload(self, array: Array) -> Any:
        return array


class RecordingRunner:
    """A ``HostRunner`` that also keeps every full feed it runs: calibration data for quantization."""

    def __init__(self, inner: HostRunner, sink: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._sink = sink

    def run(self, feed: Mapping[str, Array], past: Sequence[Any]) -> tuple[Array, list[Any]]:
        full: dict[str, Any] = dict(feed)
        full.update(zip(self._inner.past_names, past, strict=True))
        self._sink.append(full)
        return self._inner.run(feed, past)

    def upload(self, array: Array) -> Any:
        return array


class BoundRunner:
    def __init__(
        self,
        session: ort.InferenceSession,
        past_names: Sequence[str],
        present_names: Sequence[str],
        *,
        device: str = "cuda",
        device_id: int = 0,
    ) -> None:
        self._session = session
        self._past_names = tuple(past_names)
        self._present_names = tuple(present_names)
        self._device = device
        self._device_id = device_id

    def run(self, feed: Mapping[str, Array], past: Sequence[Any]) -> tuple[Array, list[Any]]:
        binding = self._session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name, value in zip(self._past_names, past, strict=True):
            if isinstance(value, np.ndarray):  # an empty past: nothing to keep on the device
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")  # sampling happens on the host
        for name in self._present_names:
            binding.bind_output(name, self._device, self._device_id)
        self._session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return np.asarray(outputs[0].numpy()), list(outputs[1:])

    def upload(self, array: Array) -> Any:
        if array.size == 0:
            return array
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self._device, self._device_id)
