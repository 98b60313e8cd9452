"""The two install paths pin the same packages; only TensorFlow's build differs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pins(name: str) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return dict(line.split("==") for line in lines if line)


def test_gpu_requirements_match_the_cpu_ones_but_for_tensorflows_cuda_build():
    cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
    assert cpu.pop("tensorflow-cpu") == gpu.pop("tensorflow[and-cuda]")
    assert cpu == gpu


def test_every_requirement_is_pinned():
    for name in ("requirements.txt", "requirements-gpu.txt"):
        lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
        assert all("==" in line for line in lines if line), name


def test_the_bench_reports_the_device_it_ran_on():
    from core.training.distribute import describe_devices

    devices = describe_devices()
    assert devices["device"].startswith("CPU only (") if not devices["gpus"] else " x " in devices["device"]
    assert devices["tensorflow"] and isinstance(devices["built_with_cuda"], bool)
