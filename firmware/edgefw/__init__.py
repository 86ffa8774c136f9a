VERSION = "0.1.0"


def drop(name):
    # Forgets module edgefw.<name> (code run once, at boot) so the heap its
    # code holds can be reclaimed; a later import loads it again.
    import sys
    sys.modules.pop("edgefw." + name, None)
    try:
        # The package holds each submodule as an attribute too.
        delattr(sys.modules["edgefw"], name)
    except (AttributeError, KeyError, TypeError):
        pass
