"""The four phases of a route run as plain functions (the operators are thin wrappers).

extract -> route -> deliver (one per destination) -> summarize/commit. Each phase reads and
writes staged chunk files and returns a small JSON-able manifest for XCom.
"""
