"""Traffic reports from the analytics rollups: summaries and their renderings."""

from lbtui.reporting.render import Format, render
from lbtui.reporting.summary import Period, Summary, parse_since, summarize

__all__ = ["Format", "Period", "Summary", "parse_since", "render", "summarize"]
