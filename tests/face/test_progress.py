"""Progress display: a tqdm bar in a terminal, one plain line per task otherwise."""
import io

import fastconv.face.progress as progress


def test_one_line_when_stdout_is_not_a_terminal(capsys):
    bar = progress.progress_bar(3, "decoding 3 images", unit="img")
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(loss="0.5")
    assert capsys.readouterr().out == ""  # nothing until the task ends
    bar.close()
    out = capsys.readouterr().out
    assert out.startswith("decoding 3 images: 3/3 img in ") and out.endswith("s (loss=0.5)\n")
    quiet = progress.progress_bar(3, "x", line_when_piped=False)
    quiet.update(3)
    quiet.close()
    progress.progress_bar(3, "y", enabled=False).close()
    assert capsys.readouterr().out == ""


def test_a_bar_in_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(progress.sys, "stdout", Tty())
    bar = progress.progress_bar(2, "epoch", enabled=True)
    assert hasattr(bar, "refresh") and not isinstance(bar, progress._Silent)  # a tqdm bar, not a stand-in
    bar.close()
