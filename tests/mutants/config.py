"""Mutants of the typed configs' checks and the layer contract."""

U = "tests/test_cli.py::test_user_errors_are_one_line_naming_the_key"

MUTANTS = [
    {"name": "repeated-key-last-wins", "path": "gs_lightning/cli.py",
     "old": "        check_repeated_keys(argv[1:])\n", "new": "",
     "tests": ["tests/test_cli.py::test_user_errors_are_one_line_naming_the_key[pattern_expanded_by_the_shell]"],
     "why": "an unquoted fit.input=d/{0..99}.tar, expanded by bash, fits only the last shard"},
    {"name": "override-taken-for-an-expansion", "path": "gs_lightning/cli.py",
     "old": "keys[i + 1] == key:", "new": "key in keys[i + 1 :]:",
     "tests": ["tests/test_cli.py::test_a_key_given_in_a_row_is_a_shell_expansion_and_given_again_later_an_override"],
     "why": "a preset's fit.iterations=5 followed by the user's fit.iterations=40 is refused as a shell expansion"},
    {"name": "make-expands-patterns", "path": "Makefile",
     "old": "\tset -f +B; $(PY) -m gs_lightning fit $(ARGS)", "new": "\t$(PY) -m gs_lightning fit $(ARGS)",
     "tests": ["tests/test_cli.py::test_make_passes_patterns_to_the_command_as_written"],
     "why": "make fit ARGS=\"fit.input=d/{00000..00099}.tar\", the README's example, fits only 00099.tar"},
    {"name": "compare-not-a-run-traceback", "path": "gs_lightning/compare.py",
     "old": 'raise UserError(str(run_dir), f"is not a finished train run: {f} is missing")',
     "new": 'raise FileNotFoundError(f"{run_dir} is not a finished train run: {f} is missing")',
     "tests": ["tests/test_cli.py::test_user_errors_are_one_line_naming_the_key[compare_not_a_run]"],
     "why": "compare on a folder that is no finished run answers with a traceback"},
    {"name": "cfg-prints-unchecked", "path": "gs_lightning/cli.py",
     "old": "        validate(cfg, schema)\n", "new": "",
     "tests": ["tests/test_cli.py::test_cfg_prints_the_composed_config_and_runs_nothing"],
     "why": "--cfg prints model.mode=distil as a good config; the run it checks then stops on it"},
    {"name": "lower-bounds-unchecked", "path": "gs_lightning/config.py",
     "old": '        if m.get(bound) is not None and not ok(value, m[bound]):', "new": '        if False:',
     "tests": ["tests/test_cli.py"], "why": "fit.num_splats=0 and friends start work instead of an error"},
    {"name": "output-file-accepted", "path": "gs_lightning/cli.py",
     "old": "    if p.exists() and not p.is_dir():", "new": "    if False:",
     "tests": ["tests/test_cli.py"], "why": "fit.output naming a file fails later with a traceback"},
    {"name": "upper-bounds-unchecked", "path": "gs_lightning/config.py",
     "old": '("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")',
     "new": '("le", lambda v, b: True, "<="), ("lt", lambda v, b: True, "<")',
     "tests": ["tests/test_cli.py"], "why": "fit.lr.beta2=1, fit.lr.decay_to=1.5 and friends start work instead of an error"},
    {"name": "list-elements-unchecked", "path": "gs_lightning/config.py",
     "old": "for i, v in enumerate(value) if isinstance(value, ListConfig) else [(None, value)]:",
     "new": "for i, v in [] if isinstance(value, ListConfig) else [(None, value)]:",
     "tests": ["tests/test_cli.py"], "why": "fit.prune.at=[0.5,1.5] prunes outside the run, silently"},
    {"name": "models-import-fit", "path": "gs_lightning/models/clip_module.py",
     "old": "from gs_lightning.schema import setting\n",
     "new": "from gs_lightning.schema import setting\nimport gs_lightning.fit.schedule  # noqa\n",
     "tests": ["tests/test_layers.py::test_the_package_keeps_its_layers"],
     "why": "a model reaches into the fit: the layers' arrow points sideways"},
    {"name": "files-mirror-defaults", "path": "experiments/fit/paper.yaml",
     "old": "  init: structured\n", "new": "  init: structured\n  num_splats: 400\n",
     "tests": ["tests/test_experiments.py::test_an_experiment_file_holds_only_its_differences"],
     "why": "an experiment file writes a default a second time"},
    {"name": "units-unchecked-by-the-stem", "path": "gs_lightning/models/stem.py",
     "old": '        splats.expect_units("unit", "SplatStem")\n', "new": "",
     "tests": ["tests/test_models.py::test_the_stem_takes_unit_square_splats_only"],
     "why": "splats in pixels reach the stem's Fourier features"},
    {"name": "units-unchecked-by-rasterize", "path": "gs_lightning/render.py",
     "old": '    splats.expect_units("pixels", "rasterize")\n', "new": "",
     "tests": ["tests/test_render.py::test_bad_splats_name_the_field"],
     "why": "unit-square splats are rendered as if in pixels: a blank image"},
    {"name": "group-given-a-value-traceback", "path": "gs_lightning/config.py",
     "old": """    except (ValidationError, TypeError) as e:
        # omegaconf's refusal of a value where the schema has a group of keys names no key and has no message,
        # and keys given to a list end in a bare TypeError: find the key by comparing the two shapes.
        if shape := _misshapen(OmegaConf.to_container(cfg, resolve=False),
                               OmegaConf.to_container(other, resolve=False)):
            raise UserError(shape[0], f"{shape[1]} (from {source})") from None
        if not isinstance(e, ValidationError):
            raise
        raise UserError(e.full_key or source, f"{(e.msg or str(e)).splitlines()[0]} (from {source})") from None
""",
     "new": """    except ValidationError as e:
        raise UserError(e.full_key or source, f"{e.msg.splitlines()[0]} (from {source})") from None
""",
     "tests": [f"{U}[fit_lr_group_given_a_value]", f"{U}[splats_group_given_a_value]", f"{U}[list_given_keys]"],
     "why": "fit.lr=3 or data.splats=x (a value where the schema has a group of keys) ends in a traceback"},
    {"name": "fit-trainer-unchecked", "path": "gs_lightning/cli.py",
     "old": '    check_output_folder(cfg.fit.output, "fit.output")\n    check_trainer(cfg.trainer)\n',
     "new": '    check_output_folder(cfg.fit.output, "fit.output")\n',
     "tests": [f"{U}[devices_negative]", f"{U}[accelerator_not_installed]"],
     "why": "fit trainer.devices=-1 writes fit.output's settings, then ends in Lightning's TypeError"},
    {"name": "cfg-trainer-unchecked", "path": "gs_lightning/cli.py",
     "old": '        if "trainer" in cfg:\n            check_trainer(cfg.trainer)\n', "new": "",
     "tests": [f"{U}[precision_unknown]"],
     "why": "--cfg prints trainer.precision=foo as a good config; the run it checks then stops on it"},
    {"name": "trainer-refusals-narrowed", "path": "gs_lightning/build.py",
     "old": "    except Exception as e:  # noqa: BLE001  Lightning refuses settings with",
     "new": "    except ValueError as e:  # noqa: BLE001  Lightning refuses settings with",
     "tests": [f"{U}[devices_negative]", f"{U}[accelerator_not_installed]"],
     "why": "Lightning's TypeError (devices=-1) and ImportError (accelerator=tpu) escape the check as tracebacks"},
    {"name": "compare-out-unchecked", "path": "gs_lightning/cli.py",
     "old": '    check_output_folder(ns.out, "--out")\n', "new": "",
     "tests": [f"{U}[compare_out_is_a_file]"],
     "why": "compare --out <a file> evaluates every run, then ends in FileExistsError"},
    {"name": "eval-out-checked-late", "path": "gs_lightning/cli.py",
     "old": '    check_output_folder(cfg.out, "out")\n', "new": "",
     "tests": [f"{U}[eval_out_is_a_file]"],
     "why": "eval out=<a file> evaluates every task of every run, then ends in FileExistsError"},
    {"name": "eval-reference-checked-late", "path": "gs_lightning/cli.py",
     "old": ["""    names = [run_config(run).name for run in run_dirs]
    if cfg.reference and cfg.reference not in names:
        raise UserError("reference", f"{cfg.reference!r} is none of the runs given ({', '.join(names)}); give one "
                                     "of their names, or leave it out for the first RGB run")
""", "    out = Path(cfg.out)\n    out.mkdir("],
     "new": ["", """    if cfg.reference and reference is None:
        raise UserError("reference", f"{cfg.reference!r} is none of the runs given")
    out = Path(cfg.out)
    out.mkdir("""],
     "tests": [f"{U}[eval_reference_unknown]"],
     "why": "eval reference=<no run's name> is refused only after every task of every run was evaluated"},
    {"name": "help-shows-one-experiments-values", "path": "gs_lightning/cli.py",
     "old": "cfg = compose(names, overrides) if names else compose_schema(schema, [], overrides)",
     "new": "cfg = compose(names or ['rgb'], overrides)",
     "tests": ["tests/test_cli.py::test_help_without_names_shows_the_defaults[train]"],
     "why": "train --help shows rgb's 8 devices and bf16-mixed under a heading that calls them the defaults"},
]
