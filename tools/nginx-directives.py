#!/usr/bin/env python3
"""Derive nginx's directive table from its source: every `ngx_command_t` array of every module.

Usage: tools/nginx-directives.py [NGINX_GIT_DIR]

Writes src/config/nginx-directives.tsv and src/config/nginx-options.tsv (both embedded in imbang:
the unknown-directive message names the module, `-V` prints nginx's configure options).

Reads two versions from nginx's git repository (no work tree needed): release-1.22.1 (Debian's
nginx) and the newest `release-*` tag, and writes their union as tab-separated lines:

    module  directive  contexts  arity  block  versions

- module: the `ngx_module_t` whose directive array holds the entry (`ngx_http_proxy_module`).
- contexts: nginx's `NGX_*_CONF` flags without the `NGX_` prefix and `_CONF` suffix, joined by
  `|` (`HTTP_MAIN|HTTP_SRV|HTTP_LOC`); `ANY` for NGX_ANY_CONF.
- arity: `NOARGS`, `TAKE1`..`TAKE7` and their unions (`TAKE12`, `TAKE1234`), `FLAG`, `1MORE`,
  `2MORE`, `ANY`, joined by `|` when nginx combines them (`NOARGS|TAKE1`).
- block: `BLOCK` for a block directive, `-` otherwise.
- versions: `both`, or the only version that has the entry (a directive added after 1.22.1, or
  removed since). A directive whose contexts or arity changed between the versions gets one line
  per version.

nginx-options.tsv lists the module options of nginx's `auto/options` in both versions, one a line:
`with	http_sub_module` (a module nginx builds only when asked) or `without	http_map_module` (one it
builds unless told not to).

Only names and flags are read (facts about nginx's configuration language), never code.
Entries inside `#if` blocks are all listed: a build may or may not have them.
"""

import os
import re
import subprocess
import sys

OLD = "release-1.22.1"

ARRAY = re.compile(r"static\s+ngx_command_t\s+(\w+)\s*\[\s*\]\s*=\s*\{(.*?)ngx_null_command", re.S)
ENTRY = re.compile(r"\{\s*ngx_string\(\"([^\"]+)\"\)\s*,\s*([^,]+?)\s*,", re.S)
MODULE = re.compile(r"ngx_module_t\s+(\w+)\s*=\s*\{\s*NGX_MODULE_V1\s*,\s*[^,]+,\s*(\w+)\s*,", re.S)
COMMENT = re.compile(r"/\*.*?\*/", re.S)

# Arity bits of NGX_CONF_TAKE* (ngx_conf_file.h); the named unions are spelled out.
TAKE_UNIONS = {
    "TAKE12": ["TAKE1", "TAKE2"],
    "TAKE13": ["TAKE1", "TAKE3"],
    "TAKE23": ["TAKE2", "TAKE3"],
    "TAKE123": ["TAKE1", "TAKE2", "TAKE3"],
    "TAKE1234": ["TAKE1", "TAKE2", "TAKE3", "TAKE4"],
}
ARITY_ORDER = ["NOARGS", "TAKE1", "TAKE2", "TAKE3", "TAKE4", "TAKE5", "TAKE6", "TAKE7",
               "FLAG", "1MORE", "2MORE", "ANY"]


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True,
                          text=True, errors="replace").stdout


def newest_tag(repo):
    tags = [t for t in git(repo, "tag", "--list", "release-*").split() if t]

    def key(t):
        return [int(x) for x in re.findall(r"\d+", t)]

    return max(tags, key=key)


def classify(flags):
    """(contexts, arity, block) of one entry's flag expression."""
    contexts, arity, block = [], [], False
    for flag in (f.strip() for f in flags.split("|")):
        if not flag:
            continue
        name = flag.removeprefix("NGX_")
        if name == "DIRECT_CONF":
            continue  # how nginx stores the value, not where it may appear
        if name == "CONF_BLOCK":
            block = True
        elif name.startswith("CONF_"):
            bits = name.removeprefix("CONF_")
            arity.extend(TAKE_UNIONS.get(bits, [bits]))
        elif name.endswith("_CONF"):
            contexts.append(name.removesuffix("_CONF"))
        else:
            raise ValueError(f"unknown flag {flag!r}")
    arity = sorted(set(arity), key=ARITY_ORDER.index)
    # Join runs of TAKEn back to nginx's names where one exists (TAKE1|TAKE2 -> TAKE12).
    takes = "".join(a.removeprefix("TAKE") for a in arity if a.startswith("TAKE"))
    rest = [a for a in arity if not a.startswith("TAKE")]
    joined = ([f"TAKE{takes}"] if takes else [])
    arity = [a for a in rest if a == "NOARGS"] + joined + [a for a in rest if a != "NOARGS"]
    return "|".join(contexts), "|".join(arity), block


def directives(repo, tag):
    """{(module, name): (contexts, arity, block)} of one version."""
    out = {}
    files = [f for f in git(repo, "ls-tree", "-r", "--name-only", tag, "src").split()
             if f.endswith(".c")]
    for path in files:
        text = COMMENT.sub("", git(repo, "show", f"{tag}:{path}"))
        modules = {arr: mod for mod, arr in MODULE.findall(text)}
        for array, body in ARRAY.findall(text):
            module = modules.get(array)
            if module is None:
                raise ValueError(f"{tag}:{path}: no module uses {array}")
            for name, flags in ENTRY.findall(body):
                key = (module, name)
                entry = classify(flags)
                if key in out and out[key] != entry:
                    # The same directive under #if/#else: keep the wider set of contexts.
                    prev = out[key]
                    ctx = "|".join(dict.fromkeys(prev[0].split("|") + entry[0].split("|")))
                    entry = (ctx, entry[1], entry[2] or prev[2])
                out[key] = entry
    return out


OPTION = re.compile(r"^\s+--(with|without)-((?:http|stream|mail)_\w+_module)\)", re.M)


def options(repo, tag):
    return set(OPTION.findall(git(repo, "show", f"{tag}:auto/options")))


# nginx's ACME module (ngx_http_acme_module) is not in nginx's tree but in its own repository
# (github nginx/nginx-acme), written in Rust: its table is listed here from that source's
# src/conf.rs. The directives of an `acme_issuer { }` block take no context flags there (the
# block's handler reads them); they are given the context ACME_ISSUER.
ACME_MODULE = "ngx_http_acme_module"
ACME = [
    ("acme_issuer", "HTTP_MAIN", "TAKE1", True),
    ("acme_shared_zone", "HTTP_MAIN", "TAKE1", False),
    ("acme_certificate", "HTTP_SRV", "1MORE", False),
    ("uri", "ACME_ISSUER", "TAKE1", False),
    ("account_key", "ACME_ISSUER", "TAKE1", False),
    ("challenge", "ACME_ISSUER", "TAKE1", False),
    ("common_name_in_csr", "ACME_ISSUER", "FLAG", False),
    ("contact", "ACME_ISSUER", "TAKE1", False),
    ("external_account_key", "ACME_ISSUER", "TAKE2", False),
    ("preferred_chain", "ACME_ISSUER", "TAKE1", False),
    ("profile", "ACME_ISSUER", "TAKE12", False),
    ("ssl_trusted_certificate", "ACME_ISSUER", "TAKE1", False),
    ("ssl_verify", "ACME_ISSUER", "FLAG", False),
    ("state_path", "ACME_ISSUER", "TAKE1", False),
    ("accept_terms_of_service", "ACME_ISSUER", "NOARGS", False),
]


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "/work/.mirror/nginx+nginx/repo"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    new = newest_tag(repo)
    old_v, new_v = OLD.removeprefix("release-"), new.removeprefix("release-")
    a, b = directives(repo, OLD), directives(repo, new)
    rows = []
    for key in sorted(set(a) | set(b)):
        if key in a and key in b and a[key] == b[key]:
            rows.append((*key, *a[key], "both"))
            continue
        if key in a:
            rows.append((*key, *a[key], old_v))
        if key in b:
            rows.append((*key, *b[key], new_v))
    rows += [(ACME_MODULE, name, ctx, arity, block, "both") for name, ctx, arity, block in ACME]
    rows.sort(key=lambda r: (r[0], r[1]))  # stable: a directive's old line stays first
    with open(os.path.join(root, "src/config/nginx-directives.tsv"), "w") as out:
        out.write(f"# nginx directives: {OLD} and {new}, derived by tools/nginx-directives.py\n")
        out.write("# module\tdirective\tcontexts\tarity\tblock\tversions\n")
        for module, name, ctx, arity, block, versions in rows:
            block = "BLOCK" if block else "-"
            out.write(f"{module}\t{name}\t{ctx}\t{arity}\t{block}\t{versions}\n")
    with open(os.path.join(root, "src/config/nginx-options.tsv"), "w") as out:
        out.write(f"# nginx configure options: {OLD} and {new}, by tools/nginx-directives.py\n")
        for kind, module in sorted(options(repo, OLD) | options(repo, new), key=lambda o: o[1]):
            out.write(f"{kind}\t{module}\n")


if __name__ == "__main__":
    main()
