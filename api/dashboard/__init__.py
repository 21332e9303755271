"""The dashboard: server-rendered pages over the stored studies, with Plotly charts served offline.

Pages are HTML shells that embed their data as JSON (Plotly figures built here in Python, where they are
typed and unit-tested) and a small vanilla script that draws them and polls `/v1` for live progress.
"""

from api.dashboard.routes import router

__all__ = ["router"]
