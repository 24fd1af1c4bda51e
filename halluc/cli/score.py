"""`halluc score ...`: score saved outputs on POPE (and RePOPE), CHAIR, MME, AMBER and HallusionBench.
No model is loaded, and nothing here imports torch.

Each command reads, calls the pure scorer in `halluc.benchmarks`, and prints a table or,
with --json, exactly one JSON object. Bad input: one line on stderr, exit code 2.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from halluc.benchmarks import amber, chair, hallusionbench, mme, pope
from halluc.benchmarks.paths import data_home
from halluc.cli.common import OneLineUsageErrors
from halluc.errors import HallucError

score_app = typer.Typer(rich_markup_mode=None,
                        help="Score saved answers, captions or MME result files with the official rules.",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_JSON = typer.Option(False, "--json", help="Print one JSON object instead of a table.")


def _one_line_errors(fn):
    """HallucError / OSError -> `error: ...` on stderr and exit 2, never a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HallucError as err:
            message = str(err)
        except OSError as err:
            message = f"{err.filename}: {err.strerror}" if err.filename else str(err)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)
    return wrapper


@score_app.command("pope", cls=OneLineUsageErrors)
@_one_line_errors
def pope_cmd(
    questions: Path = typer.Option(..., "--questions", help="POPE question file (JSON lines with label)."),
    answers: Path = typer.Option(..., "--answers", help="Answers: JSON lines with question_id and text."),
    parser: str = typer.Option("pope", "--parser", help="Yes/no parser: pope, opera, vcd, exact, word."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="Score questions without an answer as unanswered instead of refusing."),
    labels: str = typer.Option(None, "--labels", help="Corrected labels: a relabelled question file, or 'repope' "
                               "(the fetched RePOPE file of the same split). Adds 'removed'."),
    allow_partial_labels: bool = typer.Option(False, "--allow-partial-labels",
                                              help="Accept a label file covering under 80% of the questions."),
    as_json: bool = _JSON,
) -> None:
    """POPE accuracy, precision, recall, F1, yes-ratio; answers matched by question_id."""
    pope.get_parser(parser)  # an unknown parser fails before any file is read
    asked, given = pope.read_pope_questions(questions), pope.read_pope_answers(answers)
    if labels is None:
        scores = pope.score_pope(asked, given, parser, allow_missing=allow_missing,
                                 names=(str(questions), str(answers)))
        _print(scores.as_dict(), as_json, f"POPE ({parser} parser)")
        return
    label_file = _repope_file(questions) if labels == "repope" else Path(labels)
    result = pope.score_relabelled(asked, pope.read_pope_questions(label_file), given, parser,
                                   allow_missing=allow_missing, names=(str(questions), str(answers), str(label_file)),
                                   allow_partial_labels=allow_partial_labels)
    _print(result, as_json, f"RePOPE ({parser} parser, {label_file.name})")


def _repope_file(questions: Path) -> Path:
    """The fetched RePOPE file for the split named in a POPE question file's name."""
    split = next((s for s in pope.SPLITS if questions.name == f"coco_pope_{s}.json"), None)
    if split is None:
        raise HallucError(f"cannot tell the POPE split from the file name {questions.name} (expected "
                          "coco_pope_{random,popular,adversarial}.json); pass --labels with the RePOPE file itself")
    path = data_home() / "repope" / pope.REPOPE_TEMPLATE.format(split)
    if not path.is_file():
        raise HallucError(f"RePOPE labels not found at {path}: run `halluc data fetch repope` (or pass --labels FILE)")
    return path


@score_app.command("chair", cls=OneLineUsageErrors)
@_one_line_errors
def chair_cmd(
    captions: Path = typer.Option(..., "--captions", help="Captions: JSON lines with image_id and caption."),
    gt: Path = typer.Option(..., "--gt", help="COCO 2014 annotation directory, or JSON {image_id: [objects]}."),
    trim_incomplete: bool = typer.Option(False, "--trim-incomplete",
                                         help="Drop each caption's unfinished last sentence (64-token runs)."),
    as_json: bool = _JSON,
) -> None:
    """CHAIR_S, CHAIR_I, object recall and caption length."""
    pairs = chair.read_chair_captions(captions)
    truth = chair.load_chair_gt(gt, image_ids={i for i, _ in pairs})
    _print(chair.score_chair(pairs, truth, trim=trim_incomplete).as_dict(), as_json, "CHAIR")


@score_app.command("mme", cls=OneLineUsageErrors)
@_one_line_errors
def mme_cmd(
    results_dir: Path = typer.Option(..., "--results-dir", help="Folder of eval-tool files <subtask>.txt."),
    as_json: bool = _JSON,
) -> None:
    """MME acc, acc+ and score per subtask; perception, cognition and hallucination totals."""
    scores = mme.score_mme(mme.read_mme_results(results_dir))
    if as_json:
        typer.echo(json.dumps(scores.as_dict()))
    else:
        Console().print(_mme_table(scores))


@score_app.command("amber", cls=OneLineUsageErrors)
@_one_line_errors
def amber_cmd(
    answers: Path = typer.Option(..., "--answers", help="Inference file: [{\"id\": 1, \"response\": ...}, ...]."),
    data: Path = typer.Option(None, "--data", help="AMBER data folder (annotations.json, relation.json, "
                              "safe_words.txt) [default: the data home's amber/]."),
    parser: str = typer.Option("official", "--parser", help="Yes/no answers: official (exactly Yes/No), or a POPE "
                               "parser (word, exact, pope, opera) applied first."),
    extractor: str = typer.Option("auto", "--extractor", help="Nouns: auto, official (NLTK + spaCy), offline."),
    as_json: bool = _JSON,
) -> None:
    """AMBER: CHAIR, Cover, Hal, Cog; accuracy, precision, recall, F1 per dimension; AMBER Score."""
    read_as = None if parser == "official" else pope.get_parser(parser)
    folder = data or data_home() / "amber"
    if not (folder / "annotations.json").is_file():
        raise HallucError(f"no AMBER annotations in {folder}: run `halluc data fetch amber` or pass --data DIR")
    truth = amber.load_amber(folder, queries=False)
    scores = amber.score(amber.read_responses(answers), truth, amber.get_extractor(extractor, truth), read_as)
    if as_json:
        typer.echo(json.dumps(scores))
        return
    flat = {"extractor": scores["extractor"]}
    for part in ("generative", "discriminative"):
        flat.update({f"{part} {k}": v for k, v in scores.get(part, {}).items()})
    if "amber_score" in scores:
        flat["AMBER Score"] = scores["amber_score"]
    _print(flat, False, f"AMBER ({scores['extractor']} extractor, {parser} yes/no)")


@score_app.command("hallusionbench", cls=OneLineUsageErrors)
@_one_line_errors
def hallusionbench_cmd(
    answers: Path = typer.Option(..., "--answers", help="Result file in the official format (question rows with "
                                 "model_prediction), JSON array or lines."),
    questions: Path = typer.Option(None, "--questions", help="HallusionBench.json, for the ground truth when the "
                                   "result file has no gt_answer [default: the result file itself]."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="Score only the answered questions (e.g. a released sample)."),
    as_json: bool = _JSON,
) -> None:
    """qAcc, fAcc, aAcc (official aggregation; VLMEvalKit's yes/no extraction, no GPT judge)."""
    given = hallusionbench.read_predictions(answers)
    source = questions or answers
    scores = hallusionbench.score(hallusionbench.read_questions(source), given, allow_missing=allow_missing,
                                  names=(str(source), str(answers)))
    if as_json:
        typer.echo(json.dumps(scores))
        return
    subcategories = scores.pop("subcategories")
    _print(scores, False, "HallusionBench (VLMEvalKit yes/no extraction)")
    table = Table(title="per subcategory")
    for column in ("subcategory", "qAcc", "fAcc", "aAcc", "n"):
        table.add_column(column, justify="left" if column == "subcategory" else "right")
    for name, part in subcategories.items():
        table.add_row(name, *(f"{part[k]:.2f}" for k in ("qacc", "facc", "aacc")), str(part["n"]))
    Console().print(table)


def _print(metrics: dict, as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(metrics))
        return
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.2f}" if isinstance(value, float) else str(value))
    Console().print(table)


def _mme_table(scores: mme.MMEScores) -> Table:
    table = Table(title="MME")
    for column in ("subtask", "acc", "acc+", "score"):
        table.add_column(column, justify="left" if column == "subtask" else "right")
    for name, s in scores.subtasks.items():
        table.add_row(name, f"{s.acc:.2f}", f"{s.acc_plus:.2f}", f"{s.score:.2f}")
    for name in ("perception", "cognition", "hallucination"):
        total = getattr(scores, name)
        table.add_row(f"[bold]{name}[/bold]", "", "", "incomplete" if total is None else f"{total:.2f}")
    return table
