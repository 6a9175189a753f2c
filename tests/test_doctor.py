"""`tunekit doctor`: the report, the range check against tunekit's metadata, and a quiet bitsandbytes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from importlib import metadata

from tests.conftest import ROOT
from tunekit.doctor import captured_output, check_requirements, environment, problems


def test_help(cli) -> None:
    result = cli("doctor", "--help")
    assert result.code == 0 and "--json" in result.out


def test_json_names_the_installed_versions(cli) -> None:
    result = cli("doctor", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["packages"]["transformers"] == metadata.version("transformers")
    assert report["torch"]["version"] == metadata.version("torch")
    assert isinstance(report["problems"], list) and isinstance(report["notes"], list)
    declared = {check["name"] for check in report["requirements"]}
    assert {"transformers", "torch", "peft"} <= declared and "pytest" not in declared  # extras are not runtime


def test_out_of_range_version_is_a_problem() -> None:
    [check] = check_requirements(["transformers>=5.23,<5.25"], {"transformers": "5.25.0"})
    assert not check.ok
    assert check.problem == (
        'transformers 5.25.0 is outside the tested range >=5.23,<5.25: pip install "transformers>=5.23,<5.25"'
    )


def test_in_range_prerelease_passes_and_extras_are_ignored() -> None:
    checks = check_requirements(["peft<1,>=0.21", "pytest>=8; extra == 'test'"], {"peft": "0.22.0rc1"})
    assert [(c.name, c.specifier, c.ok, c.problem) for c in checks] == [("peft", ">=0.21,<1", True, None)]


def test_missing_package_is_a_problem() -> None:
    [check] = check_requirements(["trl>=1.16,<2"], {"trl": None})
    assert check.problem == 'trl is not installed: pip install "trl>=1.16,<2"'
    [check] = check_requirements(["trl>=1.16,<2"], {})
    assert check.installed is None and not check.ok


def test_bitsandbytes_without_a_backend_for_the_gpu_is_a_problem() -> None:
    report = {
        "requirements": [],
        "torch": {"version": "2.13.0", "gpus": [{"name": "H100", "memory_bytes": 80 * 2**30}]},
        "bitsandbytes": {"version": "0.50.2", "backends": ["cpu"], "import_messages": []},
    }
    [line] = problems(report)
    assert "no cuda backend" in line and "qlora" in line


def test_import_does_not_import_torch() -> None:
    code = "import tunekit.doctor, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_plain_output_has_no_bitsandbytes_log_lines() -> None:
    # A fresh process: in this one bitsandbytes may already be imported, and it logs only on import.
    env = {k: v for k, v in os.environ.items() if k != "TUNEKIT_DEBUG"}
    proc = subprocess.run(
        [sys.executable, "-m", "tunekit", "doctor"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "bitsandbytes" in proc.stdout and "transformers" in proc.stdout
    for chatter in ("gemm_4bit", "kernels-community", "DeprecationWarning", "UserWarning"):
        assert chatter not in proc.stdout + proc.stderr


def test_captured_output_collects_and_restores(capsys) -> None:
    logger = logging.getLogger("tunekit-test-chatty")
    logger.setLevel(logging.ERROR)
    filters = list(warnings.filters)
    messages: list[dict[str, str]] = []
    with captured_output("tunekit-test-chatty", messages):
        logging.getLogger("tunekit-test-chatty.sub").warning("loaded %s", "slowly")
        warnings.warn("old API", DeprecationWarning, stacklevel=1)
        print("hello from an import")
    assert capsys.readouterr().out == "" and capsys.readouterr().err == ""
    assert [m["message"] for m in messages] == [
        "tunekit-test-chatty.sub: loaded slowly",
        "DeprecationWarning: old API",
        "hello from an import",
    ]
    assert logger.level == logging.ERROR and logger.propagate and not logger.handlers
    assert warnings.filters == filters


def test_environment_is_compact() -> None:
    env = environment()
    assert set(env) == {"python", "platform", "tunekit", "torch", "gpus", "packages"}
    assert env["packages"]["transformers"] == metadata.version("transformers")
    json.dumps(env)


def test_broken_torch_is_a_problem_not_a_crash() -> None:
    report = {
        "requirements": [],
        "torch": {"version": "2.13.0", "error": "OSError: libcudnn.so.9: cannot open shared object file"},
        "bitsandbytes": {"version": "0.50.2", "error": "not imported, as torch does not import"},
    }
    [line] = problems(report)
    assert line.startswith("torch 2.13.0 does not import (OSError: libcudnn") and "pytorch.org" in line
