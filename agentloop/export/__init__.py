"""Harvest: a run's verified attempts as fine-tuning data (SFT records, DPO pairs).

Data flows source (run dirs, streamed by task) → select (verified, deduplicated, capped; pairs)
→ records (TRL or OpenAI shapes, with provenance) → split (by task id) → JSONL + stats.
"""

from agentloop.export.pipeline import ExportOptions, export_runs, output_paths
from agentloop.export.stats import ExportStats

__all__ = ["ExportOptions", "ExportStats", "export_runs", "output_paths"]
