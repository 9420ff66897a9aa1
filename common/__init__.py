"""What the trainer, the exports, the benchmarks and the web server share: the command-line
plumbing (common.cli), whole-or-nothing file writes (common.files), the character vocabulary
(common.vocab), who a process is in a torchrun job (common.dist_env) and the names and defaults
every command agrees on (common.defaults).

Nothing here imports torch, so a command answers --help and bad input without loading it.
"""
