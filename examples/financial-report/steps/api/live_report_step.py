"""GET /reports/{id}/live: a page that shows the report's progress as it changes, through the app's stream
client (/__stepline/streams/client.js) watching the report's item of the `reportProgress` stream."""

import html
import json

from starlette.responses import HTMLResponse

from stepline import ApiRequest, Context

config = {
    "type": "api",
    "name": "LiveReport",
    "description": "A page that follows a report's progress live",
    "path": "/reports/{id}/live",
    "method": "GET",
    "flows": ["financial-reporting"],
}

PAGE = """<!doctype html>
<meta charset=utf-8>
<title>Report {id}</title>
<style>body{{font:16px system-ui;margin:2rem}} li.now{{font-weight:bold}} small{{color:#666}}</style>
<h1>Report <code>{id}</code></h1>
<p id=status>connecting…</p>
<ol id=log></ol>
<script type=module>
import {{ StreamClient }} from "/__stepline/streams/client.js"
const client = new StreamClient()
const report = client.subscribeItem("reportProgress", "reports", {id_json})
report.onChange((item) => {{
  if (!item) return
  document.getElementById("status").textContent = item.message
  const li = document.createElement("li")
  li.innerHTML = `<span></span> <small>${{new Date(item.at * 1000).toLocaleTimeString()}}</small>`
  li.firstChild.textContent = item.message + (item.detail ? ` (${{item.detail}})` : "")
  document.querySelectorAll("#log li").forEach((e) => e.classList.remove("now"))
  li.classList.add("now")
  document.getElementById("log").append(li)
}})
</script>
"""


async def handler(req: ApiRequest, ctx: Context) -> HTMLResponse:
    report_id = req.path_params["id"]
    return HTMLResponse(PAGE.format(id=html.escape(report_id), id_json=json.dumps(report_id)))
