"""load_callable: the one loader of user code, its messages naming what is loaded."""

from __future__ import annotations

import pytest

from rlalign.errors import UserError
from rlalign.plugins import load_callable


def test_a_file_function_is_loaded_once_whatever_it_is_loaded_as(tmp_path):
    path = tmp_path / "user.py"
    path.write_text("CALLS = []\nCALLS.append(1)\ndef f(x):\n    return x + len(CALLS)\n")
    f = load_callable(f"{path}:f", "environment")
    g = load_callable(f"{path}:f", "reward function")
    assert f(1) == 2 and g is f  # the top-level code ran once


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "environment 'no_colon': expected 'package.module:function'"),
        ("missing/envs.py:make_env", "environment 'missing/envs.py:make_env': file "),
        ("rlalign_no_such_module:f", "no module named 'rlalign_no_such_module'"),
        ("rlalign.errors:UserErr", "has no function 'UserErr', did you mean 'UserError'?"),
        ("rlalign.errors:DISK_FULL_ERRNOS", "'DISK_FULL_ERRNOS' is not callable"),
    ],
)
def test_each_failure_names_what_and_the_spec(spec, message):
    with pytest.raises(UserError) as e:
        load_callable(spec, "environment")
    assert str(e.value).startswith(f"environment '{spec}': ")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_module_beside_the_user_imports_as_it_does_under_python_m(tmp_path):
    """The rlalign console script does not put the working directory on sys.path, python -m
    does; module:function beside the user must import from both (-I: the console script's
    sys.path, without the working directory)."""
    import subprocess
    import sys

    (tmp_path / "my_scores.py").write_text("def score(xs):\n    return [2 * x for x in xs]\n")
    code = (
        "import sys; from rlalign.plugins import load_callable; "
        "assert not any(p in ('', '.') for p in sys.path); "
        "print(load_callable('my_scores:score', 'reward function')([1, 2]))"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[2, 4]"
