"""The engine and the Python API: what the commands do, apart from their flags.

A run (`api.evaluate` → `runner`): tasks → requests → backends (through the cache) → judges →
scores → store, one step per module (`judge_plan`, `baselines`, `run_record`, `generation`,
`judging`, `scoring`) over the request and result types of `requests`. Beside runs:
`loglikelihood` (`evalharness score`), `verdicts` (judge, agreement, drift), `training` and
`pipeline` (train → evaluate → gate), `parity`, `summary` (a stored run read back) and
`callback` (evaluation inside a trainer).
"""
