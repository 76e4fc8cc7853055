"""The backend registry: listing, selecting, restoring, the environment variable, missing
backends (ImportError with a how-to) and ``set_num_threads`` validation."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv import _backend

CONTRACT = ["im2col2d", "col2im2d", "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
            "avgpool2d_backward", "upsample2d_forward", "upsample2d_backward", "downsample2d_forward",
            "downsample2d_backward", "batchnorm_stats", "batchnorm_forward", "batchnorm_backward",
            "relu_forward", "relu_backward"]


@pytest.fixture
def registry(monkeypatch):
    """Lets a test register backends: the registry and load caches are restored afterwards."""
    monkeypatch.setattr(_backend, "_REGISTRY", dict(_backend._REGISTRY))
    monkeypatch.setattr(_backend, "_loaded", dict(_backend._loaded))
    monkeypatch.setattr(_backend, "_errors", dict(_backend._errors))
    monkeypatch.setattr(_backend, "_current", _backend._current)
    return _backend


def _python(code, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "FASTCONV_BACKEND"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          timeout=120)


def test_available_backends_lists_reference():
    names = fc.available_backends()
    assert isinstance(names, list) and "reference" in names
    assert names[-1] == "reference", "reference is the slowest, listed last"
    assert len(set(names)) == len(names)


def test_required_backends_load():
    """CI sets FASTCONV_REQUIRE_BACKENDS=cython,numba so that a broken build cannot silently
    shrink the backend matrix (available_backends() just leaves it out)."""
    required = [n for n in os.environ.get("FASTCONV_REQUIRE_BACKENDS", "").split(",") if n]
    if not required:
        pytest.skip("FASTCONV_REQUIRE_BACKENDS not set")
    for name in required:
        _backend.backend_module(name)  # raises ImportError with the reason and the how-to


def test_every_available_backend_has_the_contract():
    for name in fc.available_backends():
        module = _backend.backend_module(name)
        missing = [f for f in CONTRACT if not callable(getattr(module, f, None))]
        assert not missing, f"backend {name} lacks {missing}"


def test_default_is_the_fastest_available():
    result = _python("import fastconv as fc; print(fc.get_backend()); print(fc.available_backends()[0])")
    assert result.returncode == 0, result.stderr
    current, fastest = result.stdout.split()
    assert current == fastest


def test_set_backend_unknown_name_lists_the_names(registry):
    before = fc.get_backend()
    with pytest.raises(ValueError, match=r"unknown backend 'nope'.*'reference'") as info:
        fc.set_backend("nope")
    for name in fc.available_backends():
        assert repr(name) in str(info.value)
    assert fc.get_backend() == before, "a failed set_backend must not change the backend"


@pytest.mark.parametrize("name", fc.available_backends())
def test_set_backend_and_use_backend_restore(registry, name):
    fc.set_backend("reference")
    with fc.use_backend(name) as chosen:
        assert chosen == name and fc.get_backend() == name
        y = fc.nn.Upsample1d(2)(np.ones((1, 1, 3)))
        assert y.tolist() == [[[1, 0, 1, 0, 1]]]
    assert fc.get_backend() == "reference"
    fc.set_backend(name)
    assert fc.get_backend() == name


def test_use_backend_restores_after_an_exception(registry):
    fc.set_backend("reference")
    other = fc.available_backends()[0]
    with pytest.raises(ZeroDivisionError):
        with fc.use_backend(other):
            1 / 0
    assert fc.get_backend() == "reference"
    with pytest.raises(ValueError, match="unknown backend"):
        with fc.use_backend("nope"):
            pass
    assert fc.get_backend() == "reference"


def test_forward_time_backend_runs_backward(registry):
    """The cache keeps the kernels of the forward's backend (documented in functional.py)."""
    layer = fc.nn.MaxPool1d(2)
    x = np.random.default_rng(0).standard_normal((1, 2, 6))
    with fc.use_backend("reference"):
        y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert dx.shape == x.shape and dx.sum() == y.size


def test_missing_backend_raises_import_error_with_how_to(registry):
    fc.register_backend("ghost", "no.such.module", "pip install ghost")
    assert "ghost" not in fc.available_backends()
    for _ in range(2):  # the failure is cached; the second error says the same
        with pytest.raises(ImportError, match=r"backend 'ghost' is not available \(ModuleNotFoundError.*\); "
                                              r"to get it, pip install ghost"):
            fc.set_backend("ghost")
    with pytest.raises(ImportError, match="pip install ghost"):
        with fc.use_backend("ghost"):
            pass
    assert fc.get_backend() != "ghost"


def test_register_backend_first_becomes_default(registry):
    fc.register_backend("refcopy", "fastconv.reference", first=True)
    assert fc.available_backends()[0] == "refcopy"
    _backend._current = None
    assert fc.get_backend() == "refcopy"
    with pytest.raises(TypeError, match="non-empty str"):
        fc.register_backend("", "fastconv.reference")


def test_env_var_selects_backend():
    code = "import fastconv as fc; print(fc.get_backend())"
    for name in fc.available_backends():
        result = _python(code, FASTCONV_BACKEND=name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == name


def test_env_var_ignores_case_and_spaces():
    code = "import fastconv as fc; print(fc.get_backend())"
    for name in fc.available_backends():
        result = _python(code, FASTCONV_BACKEND=f"  {name.upper()}\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == name


def test_env_var_unknown_backend_is_reported_at_import_and_raised_at_first_use():
    message = "FASTCONV_BACKEND='nope' names no backend; expected one of ['cython', 'numba', 'reference']"
    imported = _python("import fastconv", FASTCONV_BACKEND="nope")
    assert imported.returncode == 0 and "RuntimeWarning: " + message in imported.stderr, imported.stderr
    used = _python("import fastconv as fc; fc.get_backend()", FASTCONV_BACKEND="nope")
    assert used.returncode != 0
    assert "ValueError: " + message in used.stderr.splitlines()[-1], used.stderr


def test_a_backend_that_fails_for_another_reason_says_so():
    """NUMBA_NUM_THREADS=0 makes `import numba` raise ValueError: that is the cause to report,
    not 'numba is not installed'."""
    code = ("import fastconv as fc\n"
            "try:\n    fc.set_backend('numba')\nexcept ImportError as exc:\n    print(exc)")
    result = _python(code, NUMBA_NUM_THREADS="0")
    assert result.returncode == 0, result.stderr
    out = result.stdout.strip()
    assert out.startswith("backend 'numba' is installed but fastconv.kernels.numba_kernels failed to import "
                          "(ValueError: "), out
    assert out.endswith("check the environment: NUMBA_NUM_THREADS='0'"), out
    assert "pip install" not in out


@pytest.mark.parametrize("bad", [1.5, "2", True, None])
def test_set_num_threads_type(bad):
    with pytest.raises(TypeError, match=r"n must be an int, got"):
        fc.set_num_threads(bad)


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_value(bad):
    with pytest.raises(ValueError, match=rf"n must be >= 1, got {bad}"):
        fc.set_num_threads(bad)


def test_set_num_threads_applies():
    """Run in a subprocess: the call changes process-wide thread pools."""
    code = ("import os, fastconv as fc; names = fc.available_backends(); fc.set_num_threads(1); "
            "print(os.environ['OMP_NUM_THREADS']);\n"
            "if 'numba' in names:\n import numba; print(numba.get_num_threads())\n"
            "else:\n print(1)")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


def test_set_num_threads_after_numbas_pool_started_keeps_numba_compiling():
    """Numba fixes its pool size when the pool starts and raises at its next compilation if
    NUMBA_NUM_THREADS then differs; set_num_threads must not make it differ."""
    pytest.importorskip("numba")
    code = ("import numpy as np, fastconv as fc\n"
            "fc.set_num_threads(1)\n"
            "import numba\n"
            "def summer():\n"
            "    @numba.njit(parallel=True)\n"  # a new function each time: compiled, never cached
            "    def total(a):\n"
            "        s = 0.0\n"
            "        for i in numba.prange(a.size):\n"
            "            s += a[i]\n"
            "        return s\n"
            "    return total\n"
            "print(summer()(np.ones(10)))\n"  # starts Numba's pool
            "fc.set_num_threads(2)\n"
            "print(summer()(np.ones(10)))\n")
    result = _python(code, NUMBA_NUM_THREADS="2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["10.0", "10.0"]


def test_every_registered_backend_imports_by_its_registry_path():
    """The registry names modules by string: each must import under that name, carry it as
    NAME, and the compiled ones must come from the repository's top-level kernels/ folder
    (installed as fastconv.kernels by setup.py's package_dir)."""
    import importlib
    import pathlib

    package = pathlib.Path(fc.__file__).resolve().parent
    homes = {package.parent / "kernels", package / "kernels"}  # editable install, or a copied one
    required = {n for n in os.environ.get("FASTCONV_REQUIRE_BACKENDS", "").split(",") if n}
    for name, (module_path, _) in _backend._REGISTRY.items():
        if name not in fc.available_backends() and name not in required:
            continue
        module = importlib.import_module(module_path)
        assert module.NAME == name, f"{module_path} says it is {module.NAME!r}, registered as {name!r}"
        if module_path.startswith("fastconv.kernels."):
            assert pathlib.Path(module.__file__).resolve().parent in homes, module.__file__


def test_import_installed_fails_in_ci_and_skips_elsewhere(monkeypatch):
    from engine_helpers import import_installed

    monkeypatch.setenv("FASTCONV_REQUIRE_BACKENDS", "cython")
    with pytest.raises(pytest.fail.Exception, match=r"fastconv.bench.nope does not import .*required because "
                                                     r"FASTCONV_REQUIRE_BACKENDS='cython'"):
        import_installed("fastconv.bench.nope")
    monkeypatch.delenv("FASTCONV_REQUIRE_BACKENDS")
    with pytest.raises(pytest.skip.Exception, match=r"pip install -e \."):
        import_installed("fastconv.bench.nope")
    assert import_installed("fastconv.bench.twins").torch_twin
