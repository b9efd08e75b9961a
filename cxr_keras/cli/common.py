"""What several commands share: the data options, the dataset they describe, and the --out policy's options."""

from __future__ import annotations

import argparse

from cxr_keras.cli.data_options import SOURCE_KEYS, add_source_arguments


def add_data_arguments(parser: argparse.ArgumentParser, positional: bool = True) -> None:
    """The options that say where a dataset is and how to read it (shared by every command that reads data)."""
    group = parser.add_argument_group("data")
    where = "dataset root folder (or the images folder of a CSV dataset)"
    if positional:  # `cxr data-report DIR`, and --data-dir as every other command spells it
        group.add_argument("data_dir", nargs="?", help=where)
        group.add_argument("--data-dir", dest="data_dir_option", metavar="DATA_DIR", help="the same, as an option")
    else:
        group.add_argument("--data-dir", help=where)
    add_source_arguments(group)


READ_KEYS = ("data_dir", *SOURCE_KEYS)


def load_from_args(args: argparse.Namespace):
    """The dataset the options of `add_data_arguments` describe (through `sources.load_table`)."""
    from cxr_keras.config import DataConfig
    from cxr_keras.data.sources import load_table

    return load_table(DataConfig(**{key: getattr(args, key) for key in READ_KEYS}))


def add_out_argument(parser: argparse.ArgumentParser, help: str, **kwargs) -> None:
    parser.add_argument("--out", help=help, **kwargs)
    parser.add_argument("--overwrite", action="store_true", help="write over earlier results in --out")
