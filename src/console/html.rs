//! HTML for the console: every piece of outside text goes through [`esc`] (case
//! data may hold `<script>`), and pages share one layout with a navigation that
//! shows only what the person's roles allow. No inline script or style: the
//! Content-Security-Policy forbids both; the page's CSS and JS are served from
//! `/console/assets/`.

use std::fmt::Write;

use crate::store::console::{ConsoleSession, ConsoleUser};

/// `s` with `&`, `<`, `>`, `"` and `'` escaped, for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The person a page is for.
pub struct Viewer<'a> {
    pub user: &'a ConsoleUser,
    pub session: &'a ConsoleSession,
}

impl Viewer<'_> {
    pub fn is(&self, role: &str) -> bool {
        self.user.roles.iter().any(|r| r == role)
    }

    /// The hidden field every form that changes something carries.
    pub fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"_csrf\" value=\"{}\">",
            esc(&self.session.csrf)
        )
    }
}

/// A whole page: `title` and `body` (already HTML).
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(v) = viewer {
        nav.push_str("<nav><a href=\"/console/\">概览</a><a href=\"/console/cases\">办件</a>");
        if v.is("operator") || v.is("auditor") {
            nav.push_str("<a href=\"/console/deliveries\">投递</a><a href=\"/console/sync\">同步</a><a href=\"/console/audit\">审计</a><a href=\"/console/supervision\">监察</a>");
        }
        let _ = write!(
            nav,
            "<span class=\"who\">{} ({})</span><form method=\"post\" action=\"/console/logout\">{}<button>退出</button></form></nav>",
            esc(&v.user.name),
            esc(&v.user.roles.join(", ")),
            v.csrf_field()
        );
    }
    format!(
        "<!doctype html>\n<html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>{} · hallgate</title>\
<link rel=\"stylesheet\" href=\"/console/assets/console.css\"><script src=\"/console/assets/console.js\" defer></script></head>\
<body><header><h1>hallgate 政务数据交换网关</h1>{nav}</header><main><h2>{}</h2>{body}</main></body></html>\n",
        esc(title),
        esc(title)
    )
}

/// A table: header cells and rows of cells (already HTML).
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"empty\">无</td></tr>",
            head.len()
        );
    }
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_cannot_become_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
