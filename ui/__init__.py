"""What the pages share, by kind: the page table and navigation (navigation.py), process-wide
state such as cached data, devices, the run store and the executor (state.py), widgets used
on several pages (widgets.py) and Altair charts (charts.py). Pages import from here and from
core; nothing here trains or computes what core computes."""
