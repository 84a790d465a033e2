"""``python -m cxrlab.data.synthetic``: refresh the hospital table in the docs from the code."""
from .hospitals import update_docs

print("docs/synthetic_hospitals.md " + ("updated" if update_docs() else "already up to date"))
