"""Zero-shot tasks: class names and prompt templates, and the labelled images they classify.

A task is a folder in clip_benchmark's local webdataset layout (what DataComp's download_evalsets.py writes):

    <task>/classnames.txt                          one class name a line, in label order
    <task>/zeroshot_classification_templates.txt   one template a line, "{c}" where the class name goes
    <task>/test/nshards.txt, test/0.tar, ...       members .jpg/.png/.webp and .cls (the label)

A suite (experiments/suites/*.yaml) lists tasks: each with its folder under the suite's root, the metric it is
reported by (DataComp's tasklist.yml: acc1 unless said) and a title. Training validates on one task by name
(`data.eval_set`): the built-in ones below, or a task folder.

imagenet       open_clip's ImageNet-1K class names and OpenAI's 80 templates (the paper's evaluation).
fashion-mnist  the demo's: Fashion-MNIST's 10 classes and six templates, the ones its training captions are
               drawn from (gs_lightning/data/demo.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from gs_lightning.data.demo import FASHION_CLASSNAMES, FASHION_TEMPLATES
from gs_lightning.data.shards import literal, update_sizes, write_image_shard
from gs_lightning.errors import UserError

CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
# clip_benchmark's metric names (DataComp's main_metric) -> the zero-shot metrics' keys (classifier.py). Tasks
# whose metric needs what a plain labelled shard does not hold (retrieval captions, WILDS regions, income groups)
# are listed, and reported as not evaluated.
METRICS = {"acc1": "top1", "acc5": "top5", "mean_per_class_recall": "mean_per_class_recall",
           "F1-macro_all": "f1_macro"}
# clip_benchmark's (and DataComp's) metrics that need more than labelled images: a suite may list them, and
# their tasks are reported as not evaluated.
OTHER_METRICS = ("mean_recall@1", "jaccard_score_10-12", "acc_worst_region", "acc_wg", "acc_top5_wg")


def _imagenet() -> tuple[list[str], list[Callable[[str], str]]]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    return list(IMAGENET_CLASSNAMES), list(OPENAI_IMAGENET_TEMPLATES)


EVAL_SETS: dict[str, Callable[[], tuple[list[str], list[Callable[[str], str]]]]] = {
    "imagenet": _imagenet,
    "fashion-mnist": lambda: (list(FASHION_CLASSNAMES), [template(t) for t in FASHION_TEMPLATES]),
}


def template(text: str) -> Callable[[str], str]:
    """clip_benchmark's template line ("a photo of a {c}.") as the callable open_clip's classifier takes."""
    return lambda c: text.replace("{c}", c)


@dataclass
class Task:
    name: str
    folder: Path
    metric: str = "acc1"  # clip_benchmark's name of the metric the task is reported by
    title: str = ""
    classnames: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)  # lines, "{c}" for the class name
    shards: str = ""  # the test split's shard pattern

    @property
    def evaluable(self) -> bool:
        return self.metric in METRICS

    def classifier_text(self) -> tuple[list[str], list[Callable[[str], str]]]:
        return self.classnames, [template(t) for t in self.templates]


def read_task(folder: str | Path, name: str | None = None, metric: str = "acc1", title: str = "") -> Task:
    """The task in `folder` (clip_benchmark's layout); a missing folder or file is a UserError naming both."""
    folder = Path(folder)
    name = name or folder.name

    def text(file: str) -> str:
        path = folder / file
        if not path.is_file():
            raise UserError(f"task {name}", f"{path} is missing: a task folder holds {CLASSNAMES}, {TEMPLATES} and "
                                            "test/nshards.txt with its shards (clip_benchmark's layout)")
        return path.read_text(encoding="utf-8-sig")  # clip_benchmark writes UTF-8; an editor may add a BOM

    def lines(file: str) -> list[str]:
        return [line.strip() for line in text(file).splitlines() if line.strip()]

    if not folder.is_dir():
        raise UserError(f"task {name}", f"{folder} is not a folder; give suite.root, the folder that holds the "
                                        "suite's task folders")
    given = text(CLASSNAMES).rstrip("\n").split("\n")  # blank lines kept: a line's number is its label
    if blank := [i + 1 for i, line in enumerate(given) if not line.strip()]:
        raise UserError(f"task {name}", f"{folder / CLASSNAMES} line {blank[0]} is blank: each line names a class, "
                                        "and its line number is the class's label")
    classnames, templates = [line.strip() for line in given], lines(TEMPLATES)
    if len(classnames) < 2:
        raise UserError(f"task {name}", f"{folder / CLASSNAMES} names {len(classnames)} class; a zero-shot task "
                                        "chooses between two or more")
    if not templates:  # open_clip's classifier would fail on templates[0], naming no task
        raise UserError(f"task {name}", f"{folder / TEMPLATES} holds no template; give one a line, {{c}} where the "
                                        "class name goes")
    nshards = lines("test/nshards.txt")
    if len(nshards) != 1 or not (nshards[0].isascii() and nshards[0].isdigit() and int(nshards[0]) > 0):
        raise UserError(f"task {name}", f"{folder / 'test' / 'nshards.txt'} must hold one number, the count of "
                                        f"test/N.tar shards (1 or more); it holds {' '.join(nshards)[:60]!r}")
    nshards = int(nshards[0])
    missing = [i for i in range(nshards) if not (folder / "test" / f"{i}.tar").is_file()]
    if missing:
        raise UserError(f"task {name}", f"{folder / 'test' / f'{missing[0]}.tar'} is missing (nshards.txt says "
                                        f"{nshards})")
    return Task(name, folder, metric, title or name, classnames, templates,
                f"{literal(folder / 'test')}/{{0..{nshards - 1}}}.tar")


def read_suite(path: str | Path, root: str | Path) -> list[Task]:
    """The tasks a suite file lists ({tasks: [{name, folder, metric, title}]}), read from their folders under
    root. Tasks whose metric this project does not compute are kept (not read), to be reported as such."""
    spec = yaml.safe_load(Path(path).read_text())
    if not (isinstance(spec, dict) and isinstance(spec.get("tasks"), list)):
        raise UserError(str(path), "a suite file holds `tasks:`, a list of {name, folder, metric, title}")
    tasks = []
    for i, t in enumerate(spec["tasks"]):
        if not (isinstance(t, dict) and t.get("name")):
            raise UserError(str(path), f"task {i + 1} has no name: each task is {{name, folder, metric, title}}")
        if t["name"] in (seen := [task.name for task in tasks]):
            raise UserError(str(path), f"tasks {seen.index(t['name']) + 1} and {i + 1} are both named {t['name']!r}: a "
                                       "task's name keys its score and its fitted images")
        metric, title = t.get("metric", "acc1"), t.get("title", t["name"])
        if metric not in METRICS and metric not in OTHER_METRICS:
            raise UserError(str(path), f"task {t['name']}: metric {metric!r} is none of clip_benchmark's; this "
                                       f"project computes {', '.join(METRICS)}")
        folder = Path(root) / t.get("folder", t["name"])
        tasks.append(read_task(folder, t["name"], metric, title) if metric in METRICS else
                     Task(t["name"], folder, metric, title))
    return tasks


def write_task(folder: str | Path, samples: list[dict], classnames: list[str], templates: list[str],
               shard_size: int = 10000) -> Task:
    """Write a task in clip_benchmark's layout; samples: {"key", "png" (or "jpg"/"webp") bytes, "cls"}."""
    folder = Path(folder)
    (folder / "test").mkdir(parents=True, exist_ok=True)
    (folder / CLASSNAMES).write_text("\n".join(classnames) + "\n", encoding="utf-8")
    (folder / TEMPLATES).write_text("\n".join(templates) + "\n", encoding="utf-8")
    shards = [samples[i : i + shard_size] for i in range(0, len(samples), shard_size)]
    for i, chunk in enumerate(shards):
        write_image_shard(folder / "test" / f"{i}.tar", chunk)
    update_sizes(folder / "test", {f"{i}.tar": len(chunk) for i, chunk in enumerate(shards)})
    (folder / "test" / "nshards.txt").write_text(f"{len(shards)}\n")
    return read_task(folder)


def eval_set(name: str) -> tuple[list[str], list[Callable[[str], str]]]:
    """(class names, prompt templates) of a built-in eval set, or of a task folder."""
    if name in EVAL_SETS:
        return EVAL_SETS[name]()
    if not Path(name).is_dir():
        raise UserError("data.eval_set", f"{name!r} is neither a built-in eval set ({', '.join(EVAL_SETS)}) nor a "
                                         "task folder")
    return read_task(name).classifier_text()
