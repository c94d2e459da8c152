#!/usr/bin/env bash
# Checks Iron's observability assets: Prometheus rules, their promtool unit
# tests and the Grafana dashboards shipped in the Helm chart.
#
#   charts/iron/ci/check-observability.sh                 run every check, then list metrics
#   charts/iron/ci/check-observability.sh --list-metrics  only list the metric names used
#
# What it checks
#   1. `promtool check rules` on every charts/iron/rules/*.yaml|*.yml
#   2. `promtool test rules` on every charts/iron/rules/tests/*.yaml|*.yml
#   3. rule hygiene: every alert has a severity label (critical|warning|info), summary,
#      description and runbook_url annotations; every runbook anchor exists as a heading
#      in docs/operations.md (when the chart sits in the Iron repository); every alert is
#      unit-tested at least once firing and at least once not firing
#   4. dashboards (charts/iron/dashboards/*.json): valid JSON, stable unique uid,
#      schemaVersion >= 36, tag "iron", a `datasource` variable of type datasource
#      (prometheus) used by every panel, target, query variable and annotation, unique
#      panel ids, unique refIds per panel, no undefined $variables
#   5. every PromQL expression in the dashboards (panel targets, annotations and
#      label_values()/query_result() variable queries) parses: Grafana variables are
#      substituted by valid values and each expression becomes a recording rule
#      `iron:dashboard_check:N` in a temporary rule file checked with `promtool check rules`
#   6. every metric referenced by dashboards and rules belongs to the metric contract
#      below (the names the Rust side exports; histograms as _bucket/_sum/_count)
# and prints each distinct metric name as `metric: NAME`, one per line, sorted, so a
# test can compare them with a live /metrics page. Series that Prometheus itself
# creates (up, ALERTS, ...) are allowed but not listed.
#
# promtool: $PROMTOOL, else `promtool` on PATH, else (as root on Debian/Ubuntu) the
# Debian package `prometheus` is installed with apt-get (without starting its service).
# Needs python3 with PyYAML (Debian package python3-yaml, installed the same way).
set -euo pipefail

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; }

MODE=check
case "${1:-}" in
  "") ;;
  --list-metrics) MODE=list ;;
  -h|--help) usage; exit 0 ;;
  *) echo "check-observability: unknown argument: $1" >&2; usage >&2; exit 2 ;;
esac

CHART_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$CHART_DIR/../.." && pwd)"
DASH_DIR="$CHART_DIR/dashboards"
RULES_DIR="$CHART_DIR/rules"
TESTS_DIR="$RULES_DIR/tests"
DOCS_FILE="$REPO_DIR/docs/operations.md"

fail() { echo "check-observability: FAIL: $*" >&2; exit 1; }
log() { [[ $MODE == list ]] || echo "$@"; }

TMP="$(mktemp -d)"
POLICY_RC_CREATED=""
cleanup() {
  rm -rf "$TMP"
  if [[ -n $POLICY_RC_CREATED ]]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# apt-get install as root, without letting package scripts start services (the Debian
# prometheus package would otherwise start a server on :9090, Iron's admin port).
apt_install() {
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  echo "check-observability: installing $* with apt-get" >&2
  apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
  local rc=$?
  if [[ -n $POLICY_RC_CREATED ]]; then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=""; fi
  return $rc
}

command -v python3 >/dev/null 2>&1 || fail "python3 not found"
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  apt_install python3-yaml || fail "python3 module yaml (PyYAML) missing: install the Debian package python3-yaml"
  python3 -c 'import yaml' >/dev/null 2>&1 || fail "python3 module yaml still missing after installing python3-yaml"
fi

shopt -s nullglob
RULE_FILES=("$RULES_DIR"/*.yaml "$RULES_DIR"/*.yml)
TEST_FILES=("$TESTS_DIR"/*.yaml "$TESTS_DIR"/*.yml)
DASHBOARDS=("$DASH_DIR"/*.json)
shopt -u nullglob
((${#RULE_FILES[@]})) || fail "no rule files in $RULES_DIR"
((${#TEST_FILES[@]})) || fail "no rule unit tests in $TESTS_DIR"
((${#DASHBOARDS[@]})) || fail "no dashboards in $DASH_DIR"

# ---------------------------------------------------------------------------
# Python: dashboard checks, expression extraction, metric names, rule hygiene.
# Writes $TMP/dashboard-exprs.yaml (one recording rule per expression),
# $TMP/exprs.tsv (N, file, where, expression) and $TMP/metrics.txt.
# ---------------------------------------------------------------------------
cat >"$TMP/analyze.py" <<'PY'
import json, os, re, sys
import yaml

mode, tmp, docs_file = sys.argv[1], sys.argv[2], sys.argv[3]
rule_files = sys.argv[sys.argv.index("--rules") + 1:sys.argv.index("--tests")]
test_files = sys.argv[sys.argv.index("--tests") + 1:sys.argv.index("--dashboards")]
dashboards = sys.argv[sys.argv.index("--dashboards") + 1:]

# The metric contract exported by iron-proxy (admin /metrics) and iron-control (/metrics).
COUNTERS = """
iron_proxy_requests_total iron_proxy_tokens_total iron_proxy_cost_microdollars_total
iron_proxy_budget_denials_total iron_proxy_stream_cutoffs_total iron_proxy_pii_detections_total
iron_proxy_upstream_retries_total iron_proxy_stage_runs_total iron_control_http_requests_total
iron_proxy_rate_limited_total iron_proxy_rate_limit_fail_open_total
""".split()
GAUGES = """
iron_proxy_breaker_state iron_proxy_lease_remaining_microdollars iron_proxy_usage_reports_pending
iron_proxy_control_connected iron_control_budget_limit_microdollars
iron_control_budget_spent_microdollars iron_control_leases_active
""".split()
HISTOGRAMS = """
iron_proxy_request_duration_seconds iron_proxy_overhead_seconds iron_proxy_upstream_ttfb_seconds
""".split()
CONTRACT = set(COUNTERS) | set(GAUGES) | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}
# Series Prometheus creates itself: allowed, never listed (not on Iron's /metrics).
BUILTIN = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}

errors = []      # check failures
fatal = []       # a file could not be read: the metric list would be incomplete
def err(msg, is_fatal=False):
    (fatal if is_fatal else errors).append(msg)

# ---------------------------------------------------------------- PromQL lexing
LABEL_LIST_KW = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"} | LABEL_LIST_KW
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
IDENT_START = re.compile(r"[A-Za-z_:]")
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")

def _skip_string(s, i):
    q = s[i]; i += 1
    while i < len(s):
        if s[i] == "\\" and q != "`":
            i += 2; continue
        if s[i] == q:
            return i + 1
        i += 1
    raise ValueError("unterminated string")

def _skip_until(s, i, close):
    i += 1
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i); continue
        if c == close:
            return i + 1
        i += 1
    raise ValueError("missing " + close)

def metric_names(expr):
    """Metric names referenced by a PromQL expression (a small lexer: skips strings,
    label matchers, ranges, grouping label lists, functions, keywords, numbers)."""
    names = set()
    s, i, n = expr, 0, len(expr)
    while i < n:
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
        elif c == "#":
            j = s.find("\n", i); i = n if j < 0 else j
        elif c == "{":
            j = _skip_until(s, i, "}")
            m = re.search(r"""__name__\s*=\s*["'`]([A-Za-z_:][A-Za-z0-9_:]*)["'`]""", s[i:j])
            if m:
                names.add(m.group(1))
            i = j
        elif c == "[":
            i = _skip_until(s, i, "]")
        elif c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            i += 1
            while i < n and (s[i].isalnum() or s[i] in "._" or (s[i] in "+-" and s[i - 1] in "eE" and not s[i - 2:i].lower().startswith("0x"))):
                i += 1
        elif IDENT_START.match(c):
            m = IDENT.match(s, i); word = m.group(0); i = m.end()
            j = i
            while j < n and s[j].isspace():
                j += 1
            nxt = s[j] if j < n else ""
            low = word.lower()
            if low in LABEL_LIST_KW and nxt == "(":
                i = _skip_until(s, j, ")")
            elif low in KEYWORDS or word in AGGREGATIONS or nxt == "(":
                pass
            else:
                names.add(word)
        else:
            i += 1
    return names

# ---------------------------------------------------------------- rules
rule_exprs = []       # (file, alert/record name, expr)
records = set()
alerts = {}           # alertname -> file
anchors = {}          # alertname -> (file, runbook anchor)
for path in rule_files:
    base = os.path.basename(path)
    try:
        doc = yaml.safe_load(open(path)) or {}
    except yaml.YAMLError as e:
        err(f"{base}: invalid YAML: {e}", True); continue
    for g in doc.get("groups") or []:
        for r in g.get("rules") or []:
            name = r.get("alert") or r.get("record") or "?"
            rule_exprs.append((base, name, str(r.get("expr", ""))))
            if "record" in r:
                records.add(r["record"])
                continue
            alerts[name] = base
            where = f"{base}: alert {name}"
            sev = (r.get("labels") or {}).get("severity")
            if sev not in ("critical", "warning", "info"):
                err(f"{where}: label severity must be critical, warning or info (got {sev!r})")
            ann = r.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                if not str(ann.get(key, "")).strip():
                    err(f"{where}: annotation {key} missing")
            url = str(ann.get("runbook_url", ""))
            if url and "docs/operations.md#" not in url:
                err(f"{where}: runbook_url should point to an anchor in docs/operations.md (got {url})")
            elif url:
                anchors[name] = (base, url.split("#", 1)[1])

# GitHub heading slugs of docs/operations.md
def github_slugs(path):
    slugs, seen = set(), {}
    in_code = False
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"`|\*|_(?=\W)|\[|\]\([^)]*\)", "", m.group(1))
            slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            k = seen.get(slug, 0); seen[slug] = k + 1
            slugs.add(slug if k == 0 else f"{slug}-{k}")
        for a in re.findall(r'<a\s+(?:name|id)="([^"]+)"', line):
            slugs.add(a)
    return slugs

if os.path.exists(docs_file):
    slugs = github_slugs(docs_file)
    for name, (base, anchor) in sorted(anchors.items()):
        if anchor not in slugs:
            err(f"{base}: alert {name}: runbook anchor #{anchor} not found in docs/operations.md")
elif mode == "check":
    print(f"note: {docs_file} not found, runbook anchors not checked")

# every alert tested firing and not firing
fired, quiet = set(), set()
for path in test_files:
    try:
        doc = yaml.safe_load(open(path)) or {}
    except yaml.YAMLError as e:
        err(f"{os.path.basename(path)}: invalid YAML: {e}"); continue
    for t in doc.get("tests") or []:
        for a in t.get("alert_rule_test") or []:
            (fired if a.get("exp_alerts") else quiet).add(a.get("alertname"))
for name in sorted(alerts):
    if name not in fired:
        err(f"alert {name}: no unit test where it fires (alert_rule_test with exp_alerts)")
    if name not in quiet:
        err(f"alert {name}: no unit test where it must not fire (alert_rule_test with exp_alerts: [])")

# ---------------------------------------------------------------- dashboards
DS_REFS = {"${datasource}", "$datasource"}
BUILTIN_VARS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h", "__auto": "1m",
    "__rate_interval_ms": "300000", "__interval_ms": "60000", "__range_s": "3600",
    "__range_ms": "3600000", "__from": "0", "__to": "0",
}
VAR_RE = re.compile(r"\$\{(\w+)(?:[:.][^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")

def ds_uid(ds):
    if isinstance(ds, dict):
        return ds.get("uid")
    return ds

dash_exprs = []   # (file, where, original expr, substituted expr)
uids, titles = {}, {}
for path in dashboards:
    base = os.path.basename(path)
    try:
        d = json.load(open(path, encoding="utf-8"))
    except (ValueError, OSError) as e:
        err(f"{base}: invalid JSON: {e}", True); continue
    uid = d.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid or ""):
        err(f"{base}: uid must be a stable string of letters, digits, - or _ (got {uid!r})")
    elif uid in uids:
        err(f"{base}: uid {uid} also used by {uids[uid]}")
    else:
        uids[uid] = base
    title = d.get("title")
    if not title:
        err(f"{base}: title missing")
    elif title in titles:
        err(f"{base}: title {title!r} also used by {titles[title]}")
    else:
        titles[title] = base
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        err(f"{base}: schemaVersion must be >= 36 (got {d.get('schemaVersion')!r})")
    if "iron" not in (d.get("tags") or []):
        err(f"{base}: tags must include \"iron\"")

    variables = (d.get("templating") or {}).get("list") or []
    values = dict(BUILTIN_VARS)
    dsvar = [v for v in variables if v.get("name") == "datasource"]
    if not dsvar or dsvar[0].get("type") != "datasource" or dsvar[0].get("query") != "prometheus":
        err(f"{base}: needs a templating variable `datasource` of type datasource with query prometheus")
    for v in variables:
        name, vtype = v.get("name"), v.get("type")
        if vtype == "interval":
            opts = [o.strip() for o in str(v.get("query", "")).split(",") if o.strip() and not o.strip().startswith("$")]
            values[name] = opts[0] if opts else "5m"
        elif vtype == "constant":
            values[name] = str(v.get("query", "")) or "grafana_value"
        elif vtype == "custom":
            opts = [o.strip() for o in str(v.get("query", "")).split(",") if o.strip()]
            values[name] = opts[0].split(" : ")[-1] if opts else "grafana_value"
        else:
            values[name] = "grafana_value"

    def substitute(expr, where):
        def repl(m):
            name = m.group(1) or m.group(2) or m.group(3)
            if name not in values:
                err(f"{base}: {where}: undefined variable ${name}")
                return "grafana_value"
            return values[name]
        return VAR_RE.sub(repl, expr)

    def add_expr(expr, where):
        if not isinstance(expr, str) or not expr.strip():
            err(f"{base}: {where}: empty expression"); return
        dash_exprs.append((base, where, expr, substitute(expr, where)))

    for v in variables:
        if v.get("type") != "query":
            continue
        where = f"variable ${v.get('name')}"
        if ds_uid(v.get("datasource")) not in DS_REFS:
            err(f"{base}: {where}: datasource must be ${{datasource}}")
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        query = (query or "").strip()
        m = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_]\w*)\s*\)", query, re.S)
        if m:
            add_expr(m.group(1), where)
        elif re.fullmatch(r"label_values\(\s*[A-Za-z_]\w*\s*\)|label_names\(.*\)|metrics\(.*\)", query, re.S):
            pass
        elif query.startswith("query_result(") and query.endswith(")"):
            add_expr(query[len("query_result("):-1], where)
        else:
            err(f"{base}: {where}: unsupported variable query {query!r}")

    for a in (d.get("annotations") or {}).get("list") or []:
        if a.get("builtIn"):
            continue
        where = f"annotation {a.get('name')!r}"
        if ds_uid(a.get("datasource")) not in DS_REFS:
            err(f"{base}: {where}: datasource must be ${{datasource}}")
        add_expr(a.get("expr"), where)

    ids = set()
    def walk(panels):
        for p in panels or []:
            pid = p.get("id")
            where = f"panel {pid} {p.get('title')!r}"
            if pid in ids:
                err(f"{base}: duplicate panel id {pid}")
            ids.add(pid)
            if "gridPos" not in p:
                err(f"{base}: {where}: gridPos missing")
            if p.get("type") == "row":
                walk(p.get("panels"))
                continue
            if ds_uid(p.get("datasource")) not in DS_REFS:
                err(f"{base}: {where}: panel datasource must be ${{datasource}}")
            targets = p.get("targets") or []
            if not targets and p.get("type") not in ("text", "news", "dashlist"):
                err(f"{base}: {where}: no targets")
            refs = set()
            for t in targets:
                ref = t.get("refId")
                if ref in refs:
                    err(f"{base}: {where}: duplicate refId {ref}")
                refs.add(ref)
                if ds_uid(t.get("datasource")) not in DS_REFS:
                    err(f"{base}: {where} target {ref}: datasource must be ${{datasource}}")
                add_expr(t.get("expr"), f"{where} target {ref}")
    walk(d.get("panels"))

# ---------------------------------------------------------------- metrics
used = {}   # metric -> set of places
def note(expr, place):
    try:
        for m in metric_names(expr):
            used.setdefault(m, set()).add(place)
    except ValueError as e:
        err(f"{place}: cannot scan expression ({e}): {expr}", True)
for base, name, expr in rule_exprs:
    note(expr, f"{base}: {name}")
for base, where, _, expr in dash_exprs:
    note(expr, f"{base}: {where}")
for m, places in sorted(used.items()):
    if m in CONTRACT or m in BUILTIN or m in records:
        continue
    err(f"metric {m} is not in the Iron metric contract (used by {', '.join(sorted(places))})")
listed = sorted(m for m in used if m not in BUILTIN and m not in records)
with open(os.path.join(tmp, "metrics.txt"), "w") as f:
    for m in listed:
        f.write(f"metric: {m}\n")

# ---------------------------------------------------------------- rule file for promtool
groups, rows = {}, []
for n, (base, where, orig, expr) in enumerate(dash_exprs, 1):
    groups.setdefault(base, []).append({"record": f"iron:dashboard_check:{n}", "expr": expr})
    rows.append(f"{n}\t{base}\t{where}\t{orig}".replace("\n", " "))
with open(os.path.join(tmp, "dashboard-exprs.yaml"), "w") as f:
    # JSON is YAML: no quoting surprises with PromQL strings.
    json.dump({"groups": [{"name": f"dashboard {k}", "rules": v} for k, v in groups.items()]}, f, indent=1)
with open(os.path.join(tmp, "exprs.tsv"), "w") as f:
    f.write("\n".join(rows) + "\n")

if mode == "check":
    print(f"dashboards: {len(dashboards)} files, {len(dash_exprs)} PromQL expressions; "
          f"rules: {len(alerts)} alerts, {len(records)} recording rules")
for e in fatal:
    print(f"check-observability: FAIL: {e}", file=sys.stderr)
for e in errors:
    # --list-metrics only fails when the list itself may be incomplete
    print(f"check-observability: {'warning' if mode == 'list' else 'FAIL'}: {e}", file=sys.stderr)
sys.exit(1 if fatal or (errors and mode == "check") else 0)
PY

failed=0
if [[ $MODE == list ]]; then
  python3 "$TMP/analyze.py" "$MODE" "$TMP" "$DOCS_FILE" \
    --rules "${RULE_FILES[@]}" --tests "${TEST_FILES[@]}" --dashboards "${DASHBOARDS[@]}" ||
    fail "cannot list the metrics (see above)"
  cat "$TMP/metrics.txt"
  exit 0
fi

log "== dashboard and rule checks"
if ! python3 "$TMP/analyze.py" "$MODE" "$TMP" "$DOCS_FILE" \
  --rules "${RULE_FILES[@]}" --tests "${TEST_FILES[@]}" --dashboards "${DASHBOARDS[@]}"; then
  failed=1
  # keep going: the promtool checks below report their own failures
  [[ -s $TMP/exprs.tsv ]] || fail "dashboard / rule checks failed (see above)"
fi

# ---------------------------------------------------------------------------
# promtool
# ---------------------------------------------------------------------------
PROMTOOL="${PROMTOOL:-}"
if [[ -z $PROMTOOL ]]; then
  if command -v promtool >/dev/null 2>&1; then
    PROMTOOL="$(command -v promtool)"
  elif apt_install prometheus && [[ -x /usr/bin/promtool ]]; then
    PROMTOOL=/usr/bin/promtool
  else
    fail "promtool not found: install the Debian package prometheus (apt-get install prometheus), put promtool on PATH or set PROMTOOL"
  fi
fi
[[ -x $PROMTOOL ]] || fail "PROMTOOL=$PROMTOOL is not executable"
log "promtool: $PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n1))"

for f in "${RULE_FILES[@]}"; do
  log "== promtool check rules ${f#"$REPO_DIR"/}"
  if ! "$PROMTOOL" check rules "$f" 2>&1; then
    echo "check-observability: FAIL: promtool check rules $f" >&2
    failed=1
  fi
done

for f in "${TEST_FILES[@]}"; do
  log "== promtool test rules ${f#"$REPO_DIR"/}"
  # rule_files in a test are relative to the test file's directory
  if ! (cd "$(dirname "$f")" && "$PROMTOOL" test rules "$(basename "$f")") 2>&1; then
    echo "check-observability: FAIL: promtool test rules $f" >&2
    failed=1
  fi
done

log "== promtool check rules <dashboard expressions>"
if ! out="$("$PROMTOOL" check rules "$TMP/dashboard-exprs.yaml" 2>&1)"; then
  echo "${out//"$TMP/"/}" >&2
  echo "check-observability: FAIL: dashboard expressions that do not parse:" >&2
  grep -o 'iron:dashboard_check:[0-9]*' <<<"$out" | sort -u | while read -r rec; do
    awk -F '\t' -v n="${rec##*:}" '$1 == n { printf "  %s: %s\n    %s\n", $2, $3, $4 }' "$TMP/exprs.tsv" >&2
  done
  failed=1
else
  log "  SUCCESS: $(wc -l <"$TMP/exprs.tsv") dashboard expressions parse"
fi

((failed == 0)) || fail "see the messages above"

log "== metrics referenced by dashboards and rules"
cat "$TMP/metrics.txt"
log "check-observability: OK"
