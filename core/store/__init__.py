"""The run store: every run's folder (the truth), an SQLite index of them (a cache that can
always be rebuilt), and the `RunStore` facade that pages, the CLI, workers and executors use.

    files.py      atomic writes, safe reads, weights loaded with weights_only=True
    folder.py     one run's folder and what its files say (RunFolder)
    index.py      the SQLite index and the scheduler's atomic operations (RunIndex)
    processes.py  which process trains a run, and whether it is still alive
    archive.py    a run as one zip: export, and an import that trusts nothing
    writer.py     callbacks that write a training run into the store as it goes
    liveness.py   runs whose worker died are marked interrupted (torch-free)
    store.py      RunStore, the facade (creating, reading, listing, editing, deleting runs)
    recording.py  what a training writes into its run as it goes (a base of RunStore)

RunStore is imported on first use (PEP 562 `__getattr__`): the facade needs the run config and
so torch, while a worker waiting in the queue uses only the index and the folders, and must
not hold torch's ~280 MB while it waits (core.executors.queue).
"""

from core.store.files import FileDamaged, RunStoreError, atomic_save_npz, atomic_torch_save, atomic_write_json, load_state_dict
from core.store.folder import RUN_ID, STATUSES, RunFolder
from core.store.records import ACTIVE


def __getattr__(name: str):
    if name in ("RunStore", "default_root", "new_run_id"):
        from core.store import store

        return getattr(store, name)
    raise AttributeError(f"module 'core.store' has no attribute {name!r}")


__all__ = ["ACTIVE", "RUN_ID", "STATUSES", "FileDamaged", "RunFolder", "RunStore", "RunStoreError", "atomic_save_npz",
           "atomic_torch_save", "atomic_write_json", "default_root", "load_state_dict", "new_run_id"]
