"""The family catalogue that `ganzoo families` prints is read from source; it must equal the imported registry."""

import textwrap

import pytest

from components.families import family_names, get_family
from components.family_catalog import _Source, _source_families, _Unresolved, family_catalog


def test_catalogue_equals_the_registry_for_every_family():
    catalogue = family_catalog()
    assert [entry.name for entry in catalogue] == family_names()
    for entry in catalogue:
        cls = get_family(entry.name)
        assert (entry.task, entry.paper, entry.module) == (cls.task.value, cls.paper, cls.__module__), entry.name


def test_every_family_is_read_from_source_without_importing_it():
    """A family module the AST reader cannot follow is imported instead (torch: seconds); make it plain
    literals (name = "...", task = TaskKind.X, paper = "...") or teach components/family_catalog.py."""
    imported = [entry.module for entry in family_catalog() if not entry.from_source]
    assert not imported, f"read by importing them, not from source: {imported}"


def read(tmp_path, source: str):
    path = tmp_path / "fake.py"
    path.write_text(source)
    return [(e.name, e.task, e.paper) for e in _source_families(_Source("components.families.fake", path))]


HEADER = """
from components.families import register
from components.families.base import Family, TaskKind
from components.families.dcgan import DCGAN
"""


def test_reader_follows_concatenation_constants_and_inheritance(tmp_path):
    assert read(tmp_path, HEADER + textwrap.dedent("""
        PAPER = "Someone, A Paper, " "2024"

        class Helper(DCGAN):
            paper = PAPER + " (arXiv:0000.00000)"

        @register
        class Sub(Helper):
            name = "sub"

        @register
        class Other(Family):
            name = "other"
            task = TaskKind.PAIRED_TRANSLATION
            paper = Sub.paper
    """)) == [("sub", "unconditional", "Someone, A Paper, 2024 (arXiv:0000.00000)"),
             ("other", "paired_translation", "Someone, A Paper, 2024 (arXiv:0000.00000)")]


@pytest.mark.parametrize("body", [
    'name = f"x{1}"\n    task = TaskKind.UNCONDITIONAL\n    paper = "p"',  # an f-string
    'name = "x"\n    task = "unconditional"\n    paper = "p"',  # not a TaskKind member
    'name = "x"\n    task = TaskKind.UNCONDITIONAL\n    paper = make_paper()',  # a call
    'name = "x"\n    task = TaskKind.UNCONDITIONAL\n    if True:\n        paper = "p"',  # conditional
    'name = "x"\n    task = TaskKind.UNCONDITIONAL',  # paper missing: Family's bases are not in components
])
def test_reader_refuses_what_source_does_not_settle(tmp_path, body):
    with pytest.raises(_Unresolved):
        read(tmp_path, HEADER + "\n@register\nclass X(Family):\n    " + body + "\n")


def test_reader_refuses_register_called_or_rebound_names(tmp_path):
    with pytest.raises(_Unresolved):  # registered by a call: the AST reader would miss it
        read(tmp_path, HEADER + "\nclass X(DCGAN):\n    name = 'x'\n\nregister(X)\n")
    with pytest.raises(_Unresolved):  # PAPER is rebound after the class reads it
        read(tmp_path, HEADER + "\nPAPER = 'a'\n\n@register\nclass X(DCGAN):\n    name = 'x'\n    paper = PAPER\n"
                                "\nPAPER = 'b'\n")


def test_a_module_the_reader_cannot_follow_is_imported_instead(monkeypatch):
    from components import family_catalog as catalog

    read_source = catalog._source_families

    def refuse_dcgan(source):
        if source.qualname == "components.families.dcgan":
            raise _Unresolved("pretend dcgan's source is opaque")
        return read_source(source)

    monkeypatch.setattr(catalog, "_source_families", refuse_dcgan)
    entries = {entry.name: entry for entry in family_catalog()}
    assert sorted(entries) == family_names()
    assert not entries["dcgan"].from_source and entries["gan"].from_source
    dcgan = get_family("dcgan")
    assert (entries["dcgan"].task, entries["dcgan"].paper) == (dcgan.task.value, dcgan.paper)
