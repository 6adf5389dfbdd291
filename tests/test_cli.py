"""The command line: help for every verb, and the presets listing."""

import pytest

from boltzformer.cli import COMMANDS, build_parser, main


def test_every_verb_explains_itself(capsys):
    for verb in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([verb, "--help"])
        assert exit_.value.code == 0
        assert "usage: boltzformer " + verb in capsys.readouterr().out
    assert main([]) == 2  # no verb: help and a non-zero code


def test_presets_lists_every_preset_with_its_parameter_count(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    rows = [r for r in out.splitlines() if r.startswith("| ") and "preset" not in r]
    assert [r.split("|")[1].strip() for r in rows] == [
        "tiny", "paper-hiera-s", "paper-hiera-bp", "paper-focal-l"]
    tiny_params = float(rows[0].split("|")[-2])
    assert 5 < tiny_params < 15
    assert build_parser().prog == "boltzformer"
