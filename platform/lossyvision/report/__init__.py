"""The study's figures and the HTML report (``lossyvision report OUTPUT``): see :mod:`.build`."""

from lossyvision.report.build import ReportResult, build_report

__all__ = ["ReportResult", "build_report"]
