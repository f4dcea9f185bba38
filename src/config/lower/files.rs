//! Serving files: `alias`, `index`, `try_files`, `types`, `etag`, `if_modified_since`,
//! `disable_symlinks`, `autoindex*`, `gzip_static`, `max_ranges`, `log_not_found`, `sendfile`
//! (nginx's core, static, index, try_files, autoindex and gzip_static modules). `root` is read
//! in `root.rs`; what these say is done by [`crate::files`].

use std::collections::HashMap;
use std::sync::Arc;

use super::super::ast::Directive;
use super::super::error::ErrorKind;
use super::super::model::{AutoIndex, DisableSymlinks, FilesConf, GzipStatic, IfModifiedSince};
use super::super::values;
use super::{Frame, Lower};

/// The files settings of one level; `None`: not set there.
#[derive(Clone, Debug, Default)]
pub(super) struct FilesFrame {
    alias: Option<String>,
    index: Option<Vec<String>>,
    try_files: Option<Vec<String>>,
    types: Option<Arc<HashMap<String, String>>>,
    etag: Option<bool>,
    if_modified_since: Option<IfModifiedSince>,
    disable_symlinks: Option<DisableSymlinks>,
    autoindex: Option<bool>,
    autoindex_json: Option<bool>,
    autoindex_exact_size: Option<bool>,
    autoindex_localtime: Option<bool>,
    gzip_static: Option<GzipStatic>,
    max_ranges: Option<Option<u32>>,
    log_not_found: Option<bool>,
    sendfile: Option<bool>,
}

impl FilesFrame {
    /// This level's values where set, the parent's otherwise. `root` and `alias` share one
    /// slot in nginx: a level with its own `root` (`root_here`) takes no `alias` from above.
    /// `try_files` is never inherited (nginx does not merge it).
    pub(super) fn inherit(&self, parent: &FilesFrame, root_here: bool) -> FilesFrame {
        macro_rules! or {
            ($field:ident) => {
                self.$field.clone().or_else(|| parent.$field.clone())
            };
        }
        FilesFrame {
            alias: match root_here {
                true => self.alias.clone(),
                false => or!(alias),
            },
            index: or!(index),
            try_files: self.try_files.clone(),
            types: or!(types),
            etag: or!(etag),
            if_modified_since: or!(if_modified_since),
            disable_symlinks: or!(disable_symlinks),
            autoindex: or!(autoindex),
            autoindex_json: or!(autoindex_json),
            autoindex_exact_size: or!(autoindex_exact_size),
            autoindex_localtime: or!(autoindex_localtime),
            gzip_static: or!(gzip_static),
            max_ranges: or!(max_ranges),
            log_not_found: or!(log_not_found),
            sendfile: or!(sendfile),
        }
    }

    pub(super) fn conf(&self) -> Arc<FilesConf> {
        let d = FilesConf::default();
        Arc::new(FilesConf {
            alias: self.alias.clone(),
            index: self.index.clone().unwrap_or(d.index),
            try_files: self.try_files.clone().unwrap_or_default(),
            types: self.types.clone().unwrap_or(d.types),
            etag: self.etag.unwrap_or(true),
            if_modified_since: self.if_modified_since.unwrap_or(d.if_modified_since),
            disable_symlinks: self.disable_symlinks.clone().unwrap_or(d.disable_symlinks),
            autoindex: self.autoindex.unwrap_or(false).then(|| AutoIndex {
                json: self.autoindex_json.unwrap_or(false),
                exact_size: self.autoindex_exact_size.unwrap_or(true),
                localtime: self.autoindex_localtime.unwrap_or(false),
            }),
            gzip_static: self.gzip_static.unwrap_or(GzipStatic::Off),
            max_ranges: self.max_ranges.unwrap_or(None),
            log_not_found: self.log_not_found.unwrap_or(true),
            sendfile: self.sendfile.unwrap_or(false),
        })
    }

    /// Whether `alias` was set at this level (for `root`'s duplicate check).
    pub(super) fn has_alias(&self) -> bool {
        self.alias.is_some()
    }
}

/// Whether `name` is one of the directives read here.
pub(super) fn is_files(name: &str) -> bool {
    matches!(
        name,
        "alias"
            | "index"
            | "try_files"
            | "types"
            | "etag"
            | "if_modified_since"
            | "disable_symlinks"
            | "autoindex"
            | "autoindex_format"
            | "autoindex_exact_size"
            | "autoindex_localtime"
            | "gzip_static"
            | "max_ranges"
            | "log_not_found"
            | "sendfile"
    )
}

impl Lower<'_> {
    /// One of [`is_files`]' directives at a level whose settings are `f`. Single-valued ones
    /// were already checked for duplicates (except `types` and `index`, which add up).
    pub(super) fn files_directive(&mut self, d: &Directive, f: &mut Frame) {
        let args = &d.args;
        let flag = || values::flag(&args[0].value);
        let ff = &mut f.files;
        match d.name.as_str() {
            "alias" => {
                if f.root.is_some() {
                    self.invalid(
                        "\"alias\" directive is duplicate, \"root\" directive was specified earlier"
                            .to_owned(),
                        d.span,
                    );
                    return;
                }
                let text = args[0].value.as_str();
                for var in ["document_root", "realpath_root"] {
                    if text.contains(&format!("${var}")) || text.contains(&format!("${{{var}}}")) {
                        self.invalid(
                            format!(
                                "the ${var} variable cannot be used in the \"alias\" directive"
                            ),
                            args[0].span,
                        );
                        return;
                    }
                }
                ff.alias = Some(if text.starts_with('$') {
                    text.to_owned()
                } else {
                    self.path(text).to_string_lossy().into_owned()
                });
            }
            "index" => {
                let list = ff.index.get_or_insert_with(Vec::new);
                for (i, a) in args.iter().enumerate() {
                    if a.value.is_empty() {
                        self.invalid(
                            "index \"\" in \"index\" directive is invalid".to_owned(),
                            a.span,
                        );
                        return;
                    }
                    if a.value.starts_with('/') && i + 1 != args.len() {
                        self.invalid(
                            "only the last index in \"index\" directive should be absolute"
                                .to_owned(),
                            a.span,
                        );
                        return;
                    }
                    list.push(a.value.clone());
                }
            }
            "try_files" => {
                let list: Vec<String> = args.iter().map(|a| a.value.clone()).collect();
                if let Some(code) = list.last().and_then(|l| l.strip_prefix('=')) {
                    match code.parse::<u16>() {
                        Ok(n) if n <= 999 => {}
                        _ => {
                            self.invalid(
                                format!("invalid code \"{code}\""),
                                args[args.len() - 1].span,
                            );
                            return;
                        }
                    }
                }
                ff.try_files = Some(list);
            }
            "types" => {
                let mut map = match ff.types.take() {
                    Some(map) => map,
                    None => Arc::new(HashMap::new()),
                };
                let m = Arc::make_mut(&mut map);
                for line in d.block.as_deref().unwrap_or_default() {
                    if line.block.is_some() {
                        self.error(ErrorKind::NotTerminated(line.name.clone()), line.span);
                        continue;
                    }
                    if line.args.is_empty() {
                        self.error(ErrorKind::Arity(line.name.clone()), line.span);
                        continue;
                    }
                    for ext in &line.args {
                        m.insert(ext.value.to_ascii_lowercase(), line.name.clone());
                    }
                }
                ff.types = Some(map);
            }
            "etag" => ff.etag = flag(),
            "if_modified_since" => match args[0].value.as_str() {
                "off" => ff.if_modified_since = Some(IfModifiedSince::Off),
                "exact" => ff.if_modified_since = Some(IfModifiedSince::Exact),
                "before" => ff.if_modified_since = Some(IfModifiedSince::Before),
                _ => self.invalid(
                    format!(
                        "invalid value \"{}\" in \"if_modified_since\" directive, it must be \"off\", \"exact\" or \"before\"",
                        args[0].value
                    ),
                    args[0].span,
                ),
            },
            "disable_symlinks" => {
                let owner = match args[0].value.as_str() {
                    "off" if args.len() == 1 => {
                        ff.disable_symlinks = Some(DisableSymlinks::Off);
                        return;
                    }
                    "on" => false,
                    "if_not_owner" => true,
                    _ => {
                        self.invalid(
                            format!(
                                "invalid value \"{}\" in \"disable_symlinks\" directive",
                                args[0].value
                            ),
                            args[0].span,
                        );
                        return;
                    }
                };
                let from_root = match args.get(1).map(|a| a.value.as_str()) {
                    None => false,
                    Some("from=$document_root" | "from=${document_root}") => true,
                    Some(_) => {
                        self.invalid(
                            format!(
                                "\"disable_symlinks\" parameter \"{}\" is not supported by imbang (only from=$document_root)",
                                args[1].value
                            ),
                            args[1].span,
                        );
                        return;
                    }
                };
                ff.disable_symlinks = Some(DisableSymlinks::On { owner, from_root });
            }
            "autoindex" => ff.autoindex = flag(),
            "autoindex_exact_size" => ff.autoindex_exact_size = flag(),
            "autoindex_localtime" => ff.autoindex_localtime = flag(),
            "autoindex_format" => match args[0].value.as_str() {
                "html" => ff.autoindex_json = Some(false),
                "json" => ff.autoindex_json = Some(true),
                "xml" | "jsonp" => self.invalid(
                    format!(
                        "\"autoindex_format {}\" is not supported by imbang (html and json are)",
                        args[0].value
                    ),
                    args[0].span,
                ),
                _ => self.invalid_value(d, &args[0]),
            },
            "gzip_static" => match args[0].value.as_str() {
                "off" => ff.gzip_static = Some(GzipStatic::Off),
                "on" => ff.gzip_static = Some(GzipStatic::On),
                "always" => ff.gzip_static = Some(GzipStatic::Always),
                _ => self.invalid_value(d, &args[0]),
            },
            "max_ranges" => {
                if let Some(n) = self.number_arg(d, &args[0]) {
                    ff.max_ranges = Some(Some(n.min(u64::from(u32::MAX)) as u32));
                }
            }
            "log_not_found" => ff.log_not_found = flag(),
            "sendfile" => ff.sendfile = flag(),
            _ => {}
        }
    }
}
