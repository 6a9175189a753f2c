"""What this machine runs tunekit on, and what is wrong with it: the facts behind `tunekit doctor`.

    $ tunekit doctor
    $ tunekit doctor --json > environment.json     # attach to a bug report

    >>> from tunekit.doctor import check_requirements
    >>> [c.problem for c in check_requirements(["transformers>=5.23,<5.25"], {"transformers": "5.25.0"})]
    ['transformers 5.25.0 is outside the tested range >=5.23,<5.25: pip install "transformers>=5.23,<5.25"']

The tested ranges are tunekit's own package metadata (pyproject's `dependencies`, as installed), never
a copy here. Importing this module imports no torch: `diagnose()` imports torch and bitsandbytes to
describe them, `environment()` (written into every run's summary.json) only torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion

# The libraries a run's results depend on, reported whether or not tunekit declares them.
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "bitsandbytes",
    "tokenizers",
    "huggingface_hub",
    "safetensors",
)
# Optional kernels: their version from the metadata alone, as importing them can cost seconds or crash.
OPTIONAL = ("flash-attn", "liger-kernel")
BNB_DEVICES = ("cuda", "xpu", "mps", "cpu")
QUANTISED = "quantised recipes (model.quantization: 4bit/8bit, adapter.type: qlora)"
TORCH_BUILDS = "pick the build for this machine at https://pytorch.org/get-started/locally/"


@dataclass(frozen=True)
class Check:
    """One declared dependency against what is installed."""

    name: str
    specifier: str  # lower bound first, as a user would type it
    installed: str | None
    ok: bool

    @property
    def problem(self) -> str | None:
        if self.ok:
            return None
        hint = f'pip install "{self.name}{self.specifier}"'
        if canonicalize_name(self.name) == "torch":
            hint += f" ({TORCH_BUILDS})"
        if self.installed is None:
            return f"{self.name} is not installed: {hint}"
        return f"{self.name} {self.installed} is outside the tested range {self.specifier or '(any)'}: {hint}"


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def declared_requirements() -> list[str] | None:
    """tunekit's dependency lines as installed (pyproject at `pip install` time); None when tunekit
    runs from a source tree that was never installed."""
    try:
        return metadata.requires("tunekit") or []
    except metadata.PackageNotFoundError:
        return None


def runtime_requirements(lines: Iterable[str]) -> list[Requirement]:
    """The requirements that apply here: extras (test, minilm, ...) and other platforms' entries dropped."""
    found = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue  # metadata pip accepted; nothing a user could act on here
        if req.marker is not None and ("extra" in str(req.marker) or not req.marker.evaluate({"extra": ""})):
            continue
        found.append(req)
    return found


def check_requirements(lines: Iterable[str], installed: Mapping[str, str | None]) -> list[Check]:
    """Each runtime requirement in `lines` against `installed` (name -> version, None or absent: not installed).

    Pure, so a test can hand it any versions. Pre-releases count as inside a range they fall in.
    """
    versions = {canonicalize_name(name): v for name, v in installed.items()}
    checks = []
    for req in runtime_requirements(lines):
        version = versions.get(canonicalize_name(req.name))
        ok = version is not None and _contains(req, version)
        checks.append(Check(req.name, _spec(req), version, ok))
    return checks


def _contains(req: Requirement, version: str) -> bool:
    try:
        return req.specifier.contains(version, prereleases=True)
    except InvalidVersion:
        return False


def _spec(req: Requirement) -> str:
    # SpecifierSet sorts as strings ("<6,>=5.23"): people read and type the lower bound first.
    return ",".join(sorted((str(s) for s in req.specifier), key=lambda s: (not s.startswith((">", "=", "~")), s)))


def torch_facts() -> dict[str, Any]:
    """torch's version, build and devices; with an `error` when it does not import."""
    try:
        import torch
    except Exception as err:  # a broken install (missing libraries, ABI mismatch) is a finding, not a crash
        return {"version": installed_version("torch"), "error": _one_line(err)}
    with warnings.catch_warnings(record=True) as caught:  # "CUDA initialization: driver too old" and kin
        warnings.simplefilter("always")
        cuda = torch.cuda.is_available()
    gpus, device_warnings = [], [_one_line(w.message) for w in caught]
    for index in range(torch.cuda.device_count() if cuda else 0):
        try:
            props = torch.cuda.get_device_properties(index)
        except Exception as err:  # a GPU in a bad state: say so, describe the others
            device_warnings.append(f"GPU {index}: {_one_line(err)}")
            continue
        gpus.append({"name": props.name, "memory_bytes": int(props.total_memory)})
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return {
        "version": str(torch.__version__),
        "build": _build(torch),
        "cuda": torch.version.cuda,
        "hip": torch.version.hip,
        "gpus": gpus,
        "mps": bool(mps is not None and mps.is_available()),
        "xpu": bool(xpu is not None and xpu.is_available()),
        "device_warnings": device_warnings,
    }


def _build(torch: Any) -> str:
    if torch.version.hip:
        return f"ROCm {torch.version.hip}"
    if torch.version.cuda:
        return f"CUDA {torch.version.cuda}"
    return "CPU"


def bitsandbytes_facts(torch_info: Mapping[str, Any]) -> dict[str, Any]:
    """bitsandbytes' version and the devices it can quantise on here: the ones it declares
    (`supported_torch_devices`) that torch has. What it logs while importing is kept in
    `import_messages`, off the console."""
    version = installed_version("bitsandbytes")
    if version is None:
        return {"version": None}
    if "error" in torch_info:
        return {"version": version, "error": "not imported, as torch does not import"}
    messages: list[dict[str, str]] = []
    try:
        with captured_output("bitsandbytes", messages):
            import bitsandbytes
    except Exception as err:
        return {"version": version, "error": _one_line(err), "import_messages": messages}
    declared = set(getattr(bitsandbytes, "supported_torch_devices", ()))
    return {
        "version": version,
        "backends": [d for d in BNB_DEVICES if d in declared and d in _torch_devices(torch_info)],
        "import_messages": messages,
    }


def _torch_devices(torch_info: Mapping[str, Any]) -> set[str]:
    flags = {"cuda": bool(torch_info.get("gpus")), "mps": torch_info.get("mps"), "xpu": torch_info.get("xpu")}
    return {"cpu"} | {device for device, present in flags.items() if present}


@contextlib.contextmanager
def captured_output(logger_name: str, messages: list[dict[str, str]]) -> Iterator[None]:
    """Collect what an import logs, warns or prints into `messages` instead of the console; all
    settings restored afterwards. With TUNEKIT_DEBUG set it all goes to the console as usual."""
    if os.environ.get("TUNEKIT_DEBUG"):
        yield
        return
    logger = logging.getLogger(logger_name)
    saved = logger.level, logger.propagate
    handler = _Collect(messages)
    logger.addHandler(handler)
    # WARNING, not NOTSET: keep what a bug report needs even where quiet_libraries() raised the level.
    logger.setLevel(logging.WARNING)
    logger.propagate = False  # a user's root handler would print it otherwise
    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for text in dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught):  # once each
                    messages.append({"level": "WARNING", "message": text})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        printed = (out.getvalue() + err.getvalue()).strip()
        if printed:
            messages.append({"level": "OUTPUT", "message": printed})


class _Collect(logging.Handler):
    def __init__(self, messages: list[dict[str, str]]) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append({"level": record.levelname, "message": f"{record.name}: {record.getMessage()}"})


def _one_line(value: object) -> str:
    text = str(value).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(value).__name__}: {first}" if isinstance(value, BaseException) else first


def _tunekit_version() -> str:
    from tunekit import __version__

    return __version__


def environment() -> dict[str, Any]:
    """What a run ran on, for summary.json: versions and GPU names, no analysis. Imports torch (if not
    already imported) but not bitsandbytes; versions come from package metadata."""
    torch_info = torch_facts()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tunekit": _tunekit_version(),
        "torch": {key: torch_info.get(key) for key in ("version", "build", "cuda", "hip")},
        "gpus": [gpu["name"] for gpu in torch_info.get("gpus", [])],
        "packages": {name: v for name in (*PACKAGES, *OPTIONAL) if name != "torch" and (v := installed_version(name))},
    }


def diagnose() -> dict[str, Any]:
    """Everything `tunekit doctor` reports, as one JSON-ready dict with `notes` and `problems`."""
    torch_info = torch_facts()
    lines = declared_requirements()
    names = {req.name for req in runtime_requirements(lines or [])} | set(PACKAGES)
    checks = check_requirements(lines or [], {name: installed_version(name) for name in names})
    report: dict[str, Any] = {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": platform.platform(),
        "tunekit": _tunekit_version(),
        "torch": torch_info,
        "bitsandbytes": bitsandbytes_facts(torch_info),
        "packages": {name: installed_version(name) for name in PACKAGES},
        "optional": {name: installed_version(name) for name in OPTIONAL},
        "requirements": [asdict(check) for check in checks] if lines is not None else None,
    }
    report["notes"] = notes(report)
    report["problems"] = problems(report)
    return report


def problems(report: Mapping[str, Any]) -> list[str]:
    """One line per thing to fix in a `diagnose()` report, each saying how."""
    checks = [Check(**check) for check in report.get("requirements") or []]
    found = [check.problem for check in checks if check.problem]
    if report.get("requirements") is None:
        found.append("tunekit's package metadata is missing (a source tree never installed?): pip install -e .")
    torch_info = report["torch"]
    if "error" in torch_info and torch_info.get("version"):  # not installed: the range check said so
        found.append(
            f"torch {torch_info['version']} does not import ({torch_info['error']}): reinstall it ({TORCH_BUILDS})"
        )
    found.extend(_bitsandbytes_problems(report["bitsandbytes"], torch_info, checks))
    return found


def _bitsandbytes_problems(bnb: Mapping[str, Any], torch_info: Mapping[str, Any], checks: Iterable[Check]) -> list[str]:
    if bnb.get("version") is None or "error" in torch_info:
        return []  # missing: the range check reports it; torch broken: that is the problem to fix first
    spec = next((c.specifier for c in checks if canonicalize_name(c.name) == "bitsandbytes"), "")
    hint = f'pip install --force-reinstall "bitsandbytes{spec}"'
    if "error" in bnb:
        return [f"bitsandbytes {bnb['version']} does not import ({bnb['error']}): {QUANTISED} cannot load: {hint}"]
    found = [
        f"bitsandbytes logged an error while importing ({m['message']}): {QUANTISED} may fail; "
        "`python -m bitsandbytes` explains"
        for m in bnb.get("import_messages", [])
        if m["level"] in ("ERROR", "CRITICAL")
    ]
    # Where tunekit puts a quantised model: the GPU when torch sees one, else the CPU (models.default_device).
    device = "cuda" if torch_info.get("gpus") else "cpu"
    if device not in bnb.get("backends", []):
        found.append(f"bitsandbytes {bnb['version']} has no {device} backend here: {QUANTISED} cannot run: {hint}")
    return found


def notes(report: Mapping[str, Any]) -> list[str]:
    """Facts worth knowing that need no fixing."""
    torch_info = report["torch"]
    if "error" in torch_info:
        return []
    found = []
    if not torch_info["gpus"]:
        built = "" if torch_info["build"] == "CPU" else f" (this is a {torch_info['build']} build)"
        warned = "".join(f"; torch: {w}" for w in torch_info["device_warnings"])
        found.append(f"no GPU: torch sees no CUDA or ROCm device{built}, so training runs on the CPU{warned}")
    if torch_info["mps"]:
        found.append("Apple MPS is available, but tunekit trains on CUDA or the CPU")
    return found
