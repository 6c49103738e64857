"""Which stored checkpoint a run resumes from when Ray's own record of the run was never written."""

from pathlib import Path

from components.training.launcher import latest_complete_checkpoint


def write_checkpoint(run: Path, step: int, files=("state.pt", "config.json", "COMPLETE")) -> None:
    folder = run / f"checkpoint_{step:07d}"
    folder.mkdir(parents=True)
    for name in files:
        (folder / name).write_text(str(step) if name == "COMPLETE" else "x")


def test_the_newest_checkpoint_with_every_file_is_chosen(tmp_path):
    run = tmp_path / "dcgan-abc"
    write_checkpoint(run, 5)
    write_checkpoint(run, 10)
    write_checkpoint(run, 20, files=("config.json", "COMPLETE"))  # state.pt never arrived
    write_checkpoint(run, 30, files=("state.pt", "config.json"))  # not marked complete
    (run / "samples").mkdir()
    (run / "samples" / "COMPLETE").write_text("not a checkpoint")
    chosen = latest_complete_checkpoint(str(tmp_path), None, "dcgan-abc")
    assert Path(chosen.path).name == "checkpoint_0000010"


def test_a_run_without_checkpoints_or_without_a_folder_has_none(tmp_path):
    assert latest_complete_checkpoint(str(tmp_path), None, "absent") is None
    write_checkpoint(tmp_path / "r", 3, files=("state.pt",))
    assert latest_complete_checkpoint(str(tmp_path), None, "r") is None
