"""The OpenBLAS kernel choice: the measured per-family table, the flag fallback, the user's value."""

from __future__ import annotations

import pytest
from metaweight import _blas

AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "avx2", "fma"}


def test_measured_family_uses_its_table_entry_over_the_flags() -> None:
    assert _blas._pick("AuthenticAMD", 26, AVX512) == _blas.KERNEL_TABLE[("AuthenticAMD", 26)]


def test_unmeasured_cpu_falls_back_to_its_instruction_set() -> None:
    assert _blas._pick("GenuineIntel", 6, AVX512) == "SkylakeX"
    assert _blas._pick("GenuineIntel", 6, {"avx2", "fma"}) == "Haswell"
    assert _blas._pick("", None, set()) is None


def test_users_own_coretype_always_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Sandybridge")
    monkeypatch.setattr(_blas, "_cpu_info", lambda: ("AuthenticAMD", 26, AVX512))
    assert _blas.configure_openblas() == "Sandybridge"


def test_table_choice_is_exported_when_the_user_set_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(_blas, "_cpu_info", lambda: ("AuthenticAMD", 25, AVX512))
    assert _blas.configure_openblas() == "Zen"
    import os

    assert os.environ["OPENBLAS_CORETYPE"] == "Zen"


def test_source_names_the_environment_and_keeps_the_measured_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_blas, "_SOURCE", _blas._SOURCE)
    monkeypatch.setattr(_blas, "_CHOSEN", _blas._CHOSEN)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setattr(_blas, "_cpu_info", lambda: ("AuthenticAMD", 26, AVX512))
    assert _blas.configure_openblas() == "Haswell"
    assert _blas.coretype_source() == ("environment", _blas.KERNEL_TABLE[("AuthenticAMD", 26)])


def test_source_tells_the_table_from_the_flag_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_blas, "_SOURCE", _blas._SOURCE)
    monkeypatch.setattr(_blas, "_CHOSEN", _blas._CHOSEN)
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(_blas, "_cpu_info", lambda: ("AuthenticAMD", 26, AVX512))
    _blas.configure_openblas()
    assert _blas.coretype_source() == ("table", "Cooperlake")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(_blas, "_cpu_info", lambda: ("GenuineIntel", 6, AVX512))
    _blas.configure_openblas()
    assert _blas.coretype_source() == ("flags", "SkylakeX")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.setattr(_blas, "_cpu_info", lambda: ("", None, set()))
    assert _blas.configure_openblas() is None
    assert _blas.coretype_source() == ("openblas", None)
