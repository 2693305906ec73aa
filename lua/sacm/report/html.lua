--- sacm.report.html: an assessment as one self-contained HTML page (no scripts, no external
-- files: it can be mailed, archived or opened offline). Totals first, what did not cover its
-- ground next, then each endpoint with its failing rules first, their evidence, and the age of
-- the posture a rule judged when this assessment did not collect it.
local time = require "sacm.time"
local report = require "sacm.report"

local M = {}

local ESCAPES = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local function esc(s)
  return (tostring(s or ""):gsub("[&<>\"']", ESCAPES))
end

local STYLE = [[
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1d2430}
h1{font-size:1.5rem;margin:0 0 .25rem} h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #d8dee6;padding-bottom:.25rem}
.meta{color:#5a6472;margin-bottom:1rem}
.totals{display:flex;gap:.5rem;flex-wrap:wrap;margin:1rem 0}
.badge{border-radius:.4rem;padding:.35rem .7rem;font-weight:600;color:#fff}
.pass{background:#2f8f46}.fail{background:#c0392b}.error{background:#8e44ad}.notapplicable{background:#7f8c8d}.notchecked{background:#d68910}
.warn{background:#fff4e5;border-left:4px solid #d68910;padding:.5rem .75rem;margin:.5rem 0}
table{border-collapse:collapse;width:100%} th,td{text-align:left;vertical-align:top;padding:.4rem .5rem;border-bottom:1px solid #eef1f5}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;color:#5a6472}
td.r span{display:inline-block;min-width:7.5rem;text-align:center;border-radius:.3rem;padding:.1rem .4rem;color:#fff;font-size:.8rem;font-weight:600}
.sev-high{font-weight:700;color:#c0392b}.sev-medium{color:#b9770e}.sev-low,.sev-info{color:#5a6472}
ul.ev{margin:.25rem 0 0;padding-left:1.1rem;color:#3d4654;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem}
.stale{color:#b9770e;font-size:.85rem}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem}
]]

local function badge(kind, n)
  return ('<span class="badge %s">%s %d</span>'):format(kind, kind, n)
end

--- render(assessment [, {title = ...}]) -> HTML text
---@param a sacm.report.Assessment
---@param opts? {title?: string}
---@return string html
function M.render(a, opts)
  opts = opts or {}
  local out = {}
  local function add(s) out[#out + 1] = s end
  local t = report.totals(a.results)
  add('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">')
  add('<meta name="viewport" content="width=device-width, initial-scale=1">')
  add(("<title>%s</title><style>%s</style></head><body>"):format(esc(opts.title or "SACM assessment"), STYLE))
  add(("<h1>%s</h1>"):format(esc(opts.title or "SACM assessment")))
  add(('<div class="meta">correlation <code>%s</code>%s &middot; %d endpoint(s), %d result(s)</div>'):format(
    esc(a.correlation or "-"), a.finished and (" &middot; " .. esc(time.format(a.finished))) or "",
    #report.by_endpoint(a.results or {}), t.total))
  add('<div class="totals">')
  for _, k in ipairs { "fail", "error", "notchecked", "pass", "notapplicable" } do add(badge(k, t[k])) end
  add("</div>")
  for _, why in ipairs(a.incomplete or {}) do
    add(('<div class="warn"><strong>Incomplete:</strong> %s</div>'):format(esc(why)))
  end
  for _, g in ipairs(report.by_endpoint(a.results or {})) do
    local gt = report.totals(g.results)
    add(("<h2>%s <small><code>%s</code></small></h2>"):format(esc(g.hostname or g.endpoint), esc(g.endpoint)))
    add(("<div class=\"meta\">%d rules: %d fail, %d error, %d pass, %d not applicable, %d not checked</div>"):format(
      gt.total, gt.fail, gt.error, gt.pass, gt.notapplicable, gt.notchecked))
    add("<table><thead><tr><th>result</th><th>severity</th><th>rule</th><th>what it checks, and why it says so</th></tr></thead><tbody>")
    for _, r in ipairs(g.results) do
      add(("<tr><td class=\"r\"><span class=\"%s\">%s</span></td><td class=\"sev-%s\">%s</td><td><code>%s</code><br><small>%s</small></td><td>%s"):format(
        esc(r.result), esc(r.result), esc(r.severity or "info"), esc(r.severity or "-"), esc(r.rule_id),
        esc(r.policy_id or ""), esc(r.title or "")))
      if r.result ~= "pass" and r.evidence and #r.evidence > 0 then
        add('<ul class="ev">')
        for i, e in ipairs(r.evidence) do
          if i > 20 then add(("<li>... %d more</li>"):format(#r.evidence - 20)) break end
          add("<li>" .. esc(e) .. "</li>")
        end
        add("</ul>")
      end
      local age = report.posture_age(r, a)
      if age and age > 60 then
        add(('<div class="stale">judged on posture collected %s before this assessment</div>'):format(esc(report.age_text(age))))
      end
      add("</td></tr>")
    end
    add("</tbody></table>")
  end
  add(('<p class="meta">%s</p>'):format(esc(report.totals_line(t))))
  add("</body></html>\n")
  return table.concat(out, "\n")
end

return M
