"""One schema per fact: the core's settings tables (``mw_settings_table``) drive the method classes,
``LAWConfig``, their checks (the core's, naming the key), the typed signatures and the README."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import metaweight as mw
import pytest
from metaweight import _core, _settings, methods
from metaweight.law import LAWConfig

ROOT = Path(__file__).resolve().parents[2]

CLASSES = [methods.ERM, methods.L2RW, methods.MWNet, methods.GDW, methods.Focal, methods.ClassBalanced,
           methods.InverseFrequency, methods.HardMining, methods.RandomWeights, methods.SelfPaced,
           methods.Bootstrap, methods.FineTune, methods.ClassBalancedSampling]


def _gen_settings():
    spec = importlib.util.spec_from_file_location("gen_settings", ROOT / "scripts/gen_settings.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_generated_signatures_and_readme_tables_match_the_core_table():
    # methods.py's and law.py's typed blocks and README.md's tables are what the table gives now.
    assert _gen_settings().drift() == []


def test_the_table_is_json_with_every_method_of_the_core():
    table = json.loads(_core.settings_table("methods"))
    names = {m["name"] for m in table["methods"]}
    assert {"erm", "l2rw", "mwnet", "gdw", "focal", "class_balanced", "inverse_frequency", "hard_mining",
            "random_gaussian", "self_paced", "bootstrap_soft", "bootstrap_hard"} == names
    law = json.loads(_core.settings_table("law"))
    assert [s["name"] for s in law["settings"]][:3] == ["stages", "warmup_stages", "parallel"]
    with pytest.raises(mw.InvalidArgumentError, match="kind"):
        _core.settings_table("networks")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_method_classes_have_the_tables_fields_defaults_docs_and_flags(cls):
    info = _settings.method_info(cls._core_method)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for s in info.settings:
        assert s.name in fields, f"{cls.__name__} lacks {s.name}"
        want = None if s.name in cls._auto else s.python_default
        assert fields[s.name].default == want
        assert s.doc.rstrip(".") in cls.__doc__
    assert cls.needs_meta == info.needs_meta
    assert cls.has_weight_function == info.weight_net
    assert cls.has_class_weights == info.class_weights
    assert cls.supports_sample_weights == info.sample_weights
    # The default object's spec is the core's canonical spec of the method's defaults.
    if cls not in (methods.ClassBalanced, methods.InverseFrequency):
        obj = cls()
        assert obj.spec() == _core.spec_check("method", obj.spec())


def _out_of_range(s: _settings.SettingInfo) -> object | None:
    """A value of the right type just below the setting's minimum (None: no minimum)."""
    if s.type in ("bool", "enum") or s.minimum is None:
        return None
    value = s.minimum if not s.minimum_inclusive else s.minimum - 1
    one = int(value) if s.type in ("int", "ints") else float(value)
    if s.type in ("ints", "floats"):  # a list: its first entry out of range, the others fine
        return (one,) + tuple(s.minimum + 1 + i for i in range((s.count or 1) - 1))
    return one


@pytest.mark.parametrize("cls", [c for c in CLASSES if c._settings], ids=lambda c: c.__name__)
def test_values_below_a_settings_minimum_raise_naming_the_key(cls):
    kwargs = {"class_counts": (3, 4)} if "class_counts" in {s.name for s in cls._settings} else {}
    checked = 0
    for s in cls._settings:
        bad = _out_of_range(s)
        if bad is None:
            continue
        obj = cls(**{**kwargs, s.name: bad})
        with pytest.raises(mw.InvalidArgumentError, match=rf"^{s.name}: expected"):
            obj.spec()
        checked += 1
    assert checked > 0


def test_law_values_below_a_settings_minimum_raise_naming_the_key():
    checked = 0
    for s in _settings.law_settings():
        bad = _out_of_range(s)
        if bad is None or s.name == "warmup_stages":
            continue
        with pytest.raises(mw.InvalidArgumentError, match=rf"^{s.name}: expected"):
            LAWConfig(**{s.name: bad})
        checked += 1
    assert checked >= 20


def test_python_converts_types_but_the_core_checks_values():
    # Types are Python's to convert (an int for a float), ranges the core's.
    assert mw.GDW(clip=1).clip == 1.0 and isinstance(mw.GDW(clip=1).clip, float)
    assert mw.GDW(clamp=[1, 2]).clamp == (1.0, 2.0)
    with pytest.raises(mw.InvalidArgumentError, match="GDW.hidden: expected int"):
        mw.GDW(hidden=1.5)
    with pytest.raises(mw.InvalidArgumentError, match="clamp: expected 2 values"):
        mw.GDW(clamp=(1.0, 2.0, 3.0)).spec()
    with pytest.raises(mw.InvalidArgumentError, match="clamp: .*low < high"):
        mw.GDW(clamp=(2.0, 1.0)).spec()
    with pytest.raises(mw.InvalidArgumentError, match="memory: expected one of 'low', 'fast', got 'small'"):
        mw.MWNet(memory="small").spec()
    with pytest.raises(mw.InvalidArgumentError, match="virtual_lr"):
        mw.L2RW(virtual_lr=math.inf).spec()


def test_none_means_the_cores_automatic_value():
    assert "eta=none" in mw.GDW().spec()
    assert "eta=100.0" in mw.GDW(eta=100).spec()
    assert mw.Bootstrap().spec() == "bootstrap_soft(beta=0.95)"
    assert mw.Bootstrap(hard=True).spec() == "bootstrap_hard(beta=0.8)"
    assert mw.Bootstrap(beta=0.5, hard=True).spec() == "bootstrap_hard(beta=0.5)"


def test_core_spec_grammar_is_shared_and_canonical():
    assert _core.spec_check("method", "  GDW ( eta = 100 ,clip=0.5 ) ") == mw.GDW(eta=100, clip=0.5).spec()
    # Earlier key spellings stay accepted as aliases.
    assert _core.spec_check("method", "mwnet(wn_lr=0.01, detach=0)") == mw.MWNet(lr=0.01, detach_loss=False).spec()
    with pytest.raises(mw.InvalidArgumentError, match=r"method: expected '\)' closing gdw at position"):
        _core.spec_check("method", "gdw(eta=1")
    with pytest.raises(mw.InvalidArgumentError, match="method focal: unknown option 'eta'; expected one of gamma"):
        _core.spec_check("method", "focal(eta=1)")
    with pytest.raises(mw.InvalidArgumentError, match="'eta' given twice"):
        _core.spec_check("method", "gdw(eta=1, eta=2)")
    cfg = LAWConfig(stages=7, flip=True)
    assert LAWConfig.from_spec(f"law({cfg.spec()})") == cfg
    with pytest.raises(mw.InvalidArgumentError, match="unknown key 'stagez'"):
        LAWConfig.from_spec("law(stagez=3)")


def test_gdw_settings_the_core_fixes_are_refused_by_the_core():
    with pytest.raises(mw.InvalidArgumentError, match="normalize: GDW does not normalise"):
        mw.GDW(normalize=True).spec()


def test_law_config_fields_defaults_and_docs_come_from_the_table():
    fields = dataclasses.fields(LAWConfig)
    table = _settings.law_settings()
    assert [f.name for f in fields] == [s.name for s in table]
    for f, s in zip(fields, table):
        assert f.default == s.python_default
        assert s.doc.rstrip(".") in LAWConfig.__doc__
    assert LAWConfig().spec() == _core.spec_check("law", "")


def test_text_values_that_no_spec_can_hold_raise_naming_the_setting():
    with pytest.raises(mw.InvalidArgumentError, match=r"^density: expected one of 'cosine', 'dot', got 'co,sine'"):
        LAWConfig(density="co,sine")
    with pytest.raises(mw.InvalidArgumentError, match=r"MWNet.memory: .*lone surrogate"):
        mw.MWNet(memory="\ud800")
    with pytest.raises(mw.InvalidArgumentError, match=r"MWNet.memory: expected one of 'low', 'fast', got 'low\)'"):
        mw.MWNet(memory="low)")
