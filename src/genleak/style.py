"""The look of every page genleak writes (the audit report, the simulation benchmark): one CSS and
the HTML escaping, below the packages that render pages so that each can share them."""

from __future__ import annotations

import html
from typing import Any


def e(value: Any) -> str:
    """HTML-escape anything (quotes too: values also land in attributes)."""
    return html.escape(str(value), quote=True)


CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#ffffff; --soft:#f6f7f9;
  --high:#b42318; --high-bg:#fef3f2; --moderate:#b54708; --moderate-bg:#fffaeb; --low:#175cd3; --low-bg:#eff8ff;
  --none:#067647; --none-bg:#ecfdf3; --unknown:#475467; --unknown-bg:#f2f4f7; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: var(--fg); background: var(--bg); margin: 0 auto; max-width: 1180px; padding: 24px 28px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); } h3 { font-size: 14px; margin: 18px 0 6px; } h4 { margin: 0 0 2px; font-size: 13px; }
header { margin-bottom: 8px; }
.run-title { margin-top: 36px; padding-top: 16px; border-top: 3px solid var(--fg); }
.meta, .caption, .muted { color: var(--muted); } .caption { font-size: 12.5px; margin: 0 0 8px; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px;
  white-space: pre-wrap; word-break: break-all; }
.verdict { display: flex; gap: 18px; align-items: flex-start; border-radius: 10px; padding: 16px 18px;
  margin: 14px 0; border: 1px solid; }
.verdict .badge { font-size: 20px; font-weight: 700; white-space: nowrap; padding: 4px 0; min-width: 190px; }
.verdict .headline { font-size: 15px; margin: 4px 0 6px; } .verdict p { margin: 4px 0; }
.verdict-details { margin: 6px 0; padding-left: 18px; } .rule { font-size: 12.5px; color: var(--muted); }
.level-high { background: var(--high-bg); border-color: var(--high); } .level-high .badge { color: var(--high); }
.level-moderate { background: var(--moderate-bg); border-color: var(--moderate); } .level-moderate .badge { color: var(--moderate); }
.level-low { background: var(--low-bg); border-color: var(--low); } .level-low .badge { color: var(--low); }
.level-none { background: var(--none-bg); border-color: var(--none); } .level-none .badge { color: var(--none); }
.level-unknown { background: var(--unknown-bg); border-color: var(--unknown); } .level-unknown .badge { color: var(--unknown); }
.warnings { border-left: 4px solid var(--moderate); background: var(--moderate-bg); padding: 2px 14px 8px; border-radius: 4px; }
.warnings h2 { border: 0; margin-top: 10px; } .warnings ul { margin: 4px 0; padding-left: 18px; }
.failures li, .guard-warnings li { color: var(--high); }
table { border-collapse: collapse; } th, td { padding: 5px 9px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
thead th { background: var(--soft); font-weight: 600; font-size: 12.5px; white-space: nowrap; }
.attack-table, .compare-table { width: 100%; } td.num { text-align: right; white-space: nowrap;
  font-variant-numeric: tabular-nums; }
.ci { color: var(--muted); font-size: 11.5px; } .delta { color: var(--muted); font-size: 11.5px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
td.name { font-weight: 600; white-space: nowrap; }
.status.ok { color: var(--none); } .status.failed, td.failed { color: var(--high); font-weight: 600; }
.status.skipped { color: var(--muted); }
tr.failed td { background: var(--high-bg); } td.error code { white-space: pre-wrap; }
h2 .status { font-size: 12px; font-weight: 600; margin-left: 6px; }
figure { margin: 8px 0; } svg.figure { width: 100%; height: auto; }
.roc-figure { max-width: 560px; } .hist-figure { max-width: 960px; } .curve-figure { max-width: 620px; }
.image-grid { display: flex; flex-wrap: wrap; gap: 12px; } .image-grid figure { margin: 0; max-width: 100%; }
.image-grid img { max-width: 100%; image-rendering: pixelated; border: 1px solid var(--line); }
.image-grid figcaption { font-size: 12px; color: var(--muted); }
.kv th { font-weight: 500; color: var(--muted); white-space: nowrap; } .kv td code { word-break: break-all; }
.kv th, .kv td { padding: 3px 8px; } .section-metrics { min-width: 320px; }
.prov-grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 0 28px; }
.prov-block table { width: 100%; }
.hypers { display: flex; flex-wrap: wrap; gap: 16px; } .hyper { border: 1px solid var(--line); border-radius: 8px;
  padding: 8px 10px; } .hyper p { margin: 0 0 4px; font-size: 12px; }
.problem, .error { color: var(--high); }
.recommendation { border: 1px solid var(--line); border-left: 4px solid var(--low); border-radius: 6px;
  padding: 6px 12px; margin: 10px 0; }
.recommendation.priority-recommended { border-left-color: var(--high); }
.recommendation h3 { margin: 6px 0; } .recommendation .priority { font-size: 12px; font-weight: 600; color: var(--muted);
  margin-left: 6px; text-transform: uppercase; }
.recommendation-body th { width: 150px; } .recommendation-body pre { margin: 2px 0 6px; }
.recommendation .source { color: var(--muted); font-size: 12px; } .claim-held { font-size: 12px; font-weight: 600; }
.claim-no { color: var(--high); } .claim-partly { color: var(--moderate); } .claim-yes { color: var(--none); }
.no-defense { color: var(--none); font-weight: 600; }
.compare-table .verdict-row td { border-radius: 0; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
@media print { body { max-width: none; } details { display: block; } }
"""
