"""Mutants of the zero-shot suite: the task layout, the metrics by name, the table, the fitted-task cache."""

T = "tests/test_suite.py"

MUTANTS = [
    {"name": "mean-counts-tasks-not-evaluated", "path": "gs_lightning/compare.py",
     "old": "        got = [v for v in self.scores.values() if v is not None]",
     "new": "        got = [v or 0.0 for v in self.scores.values()]",
     "tests": [f"{T}::test_the_suite_table_gives_the_mean_and_the_ratios_to_the_reference"],
     "why": "a task that was not evaluated counts as 0 in the suite's mean"},
    {"name": "ratio-upside-down", "path": "gs_lightning/compare.py",
     "old": "ratios = [r.scores[t.name] / reference.scores[t.name] for t in tasks",
     "new": "ratios = [reference.scores[t.name] / r.scores[t.name] for t in tasks",
     "tests": [f"{T}::test_the_suite_table_gives_the_mean_and_the_ratios_to_the_reference"],
     "why": "the ratio to RGB is RGB's to the run"},
    {"name": "per-class-recall-read-as-accuracy", "path": "gs_lightning/zeroshot/tasks.py",
     "old": '"mean_per_class_recall": "mean_per_class_recall",', "new": '"mean_per_class_recall": "top1",',
     "tests": [f"{T}::test_each_metric_name_reads_its_own_metric"],
     "why": "tasks reported by mean per-class recall (Caltech-101, Pets, Flowers, Aircraft) get top-1 instead"},
    {"name": "template-ignores-the-class", "path": "gs_lightning/zeroshot/tasks.py",
     "old": 'return lambda c: text.replace("{c}", c)', "new": "return lambda c: text",
     "tests": [f"{T}::test_a_template_line_takes_the_class_name_where_c_is"],
     "why": "every class gets the same prompt: the classifier cannot tell them apart"},
    {"name": "fitted-cache-ignores-settings", "path": "gs_lightning/cli.py",
     "old": "key = hashlib.sha256(yaml.safe_dump(settings, sort_keys=True).encode()).hexdigest()[:12]",
     "new": 'key = "fitted"',
     "tests": [f"{T}::test_eval_reports_each_task_and_fits_a_tasks_images_once_per_setting"],
     "why": "a run with other fit settings reads task images fitted with the first run's"},
    {"name": "labels-beyond-the-classes-unchecked", "path": "gs_lightning/models/clip_module.py",
     "old": "        if (beyond := labels >= len(self.classnames)).any():", "new": "        if False:",
     "tests": [f"{T}::test_a_broken_task_is_one_error_naming_the_task_and_file"],
     "why": "a .cls beyond classnames.txt fails deep in torchmetrics, naming neither task nor file"},
]
