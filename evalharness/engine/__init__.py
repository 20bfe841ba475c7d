"""The engine and the Python API: tasks → requests → backends (through the cache) → judges →
store."""
