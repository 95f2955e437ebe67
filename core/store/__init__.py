"""The run store: every run's folder (the truth), an SQLite index of them (a cache that can
always be rebuilt), and the `RunStore` facade that pages, the CLI, workers and executors use.

    files.py      atomic writes, safe reads, weights loaded with weights_only=True
    folder.py     one run's folder and what its files say (RunFolder)
    index.py      the SQLite index and the scheduler's atomic operations (RunIndex)
    processes.py  which process trains a run, and whether it is still alive
    archive.py    a run as one zip: export, and an import that trusts nothing
    writer.py     callbacks that write a training run into the store as it goes
    store.py      RunStore, the facade
"""

from core.store.files import RunStoreError, atomic_save_npz, atomic_torch_save, atomic_write_json, load_state_dict
from core.store.folder import ACTIVE, RUN_ID, STATUSES, RunFolder
from core.store.store import RunStore, default_root, new_run_id

__all__ = ["ACTIVE", "RUN_ID", "STATUSES", "RunFolder", "RunStore", "RunStoreError", "atomic_save_npz",
           "atomic_torch_save", "atomic_write_json", "default_root", "load_state_dict", "new_run_id"]
