"""Package marker: the grammar files ship inside the wheel as ``maskstore.grammar``."""
