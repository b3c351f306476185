//! Logging in and out of the console. A wrong password, an unknown or disabled
//! user and a locked account all get the same answer after the same work (an
//! unknown name is checked against a decoy hash), and each is audited
//! (`console_login` with `ok: false` and the reason); the `lock_after`th failure in
//! a row locks the user for `lock_minutes`.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::html::{esc, page};
use super::session::CsrfForm;
use super::session::{self, csrf_ok};
use super::{Console, ConsoleError};
use crate::event::{Event, EventKind};
use crate::store::console::{ConsoleOp, ConsoleOut};
use crate::time::now_ms;

#[derive(Deserialize)]
pub(super) struct LoginForm {
    user: String,
    password: String,
}

fn login_page(message: Option<&str>) -> String {
    let note = message
        .map(|m| format!("<p class=\"error\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        "登录",
        None,
        &format!(
            "{note}<form class=\"login\" method=\"post\" action=\"/console/login\">\
<label>用户名<input name=\"user\" autocomplete=\"username\" required></label>\
<label>密码<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\">登录</button></form>"
        ),
    )
}

pub(super) async fn form() -> Html<String> {
    Html(login_page(None))
}

/// The address a request came from (the listener puts it in the request).
pub(super) fn address(req_peer: Option<&crate::tls::Peer>) -> IpAddr {
    req_peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.addr.ip())
}

async fn audit(c: &Console, user: &str, addr: IpAddr, ok: bool, reason: &str) {
    let mut e = Event::new(now_ms(), EventKind::ConsoleLogin);
    e.detail = json!({ "user": user, "address": addr.to_string(), "ok": ok, "reason": reason });
    if let Err(err) = c.app.store.audit(e).await {
        tracing::error!(error = %err, "could not audit a console login");
    }
}

pub(super) async fn submit(
    State(c): State<Arc<Console>>,
    req: Request,
) -> Result<Response, ConsoleError> {
    let addr = address(req.extensions().get::<crate::tls::Peer>());
    // A login posted from another site's page is refused (login CSRF): the browser
    // names the page's origin, and it must be this gateway.
    let cross_site = {
        let h = req.headers();
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        match get("origin") {
            Some(origin) => {
                origin.split_once("://").map(|(_, host)| host.to_string()) != get("host")
            }
            None => false,
        }
    };
    if cross_site {
        return Ok(super::pages::forbidden("登录只能从本网关的登录页提交。"));
    }
    let Ok(Form(f)) = Form::<LoginForm>::from_request(req, &()).await else {
        return Ok((
            StatusCode::BAD_REQUEST,
            Html(login_page(Some("请填写用户名和密码。"))),
        )
            .into_response());
    };
    let settings = &c.app.config.console;
    let user: String = f.user.chars().take(64).collect();
    let refused = |status: StatusCode, m: &str| (status, Html(login_page(Some(m)))).into_response();
    if c.throttle.blocked(addr) {
        audit(
            &c,
            &user,
            addr,
            false,
            "too many failures from this address",
        )
        .await;
        return Ok(refused(
            StatusCode::TOO_MANY_REQUESTS,
            "登录失败次数过多，请稍后再试。",
        ));
    }
    let found = match c.app.store.console(ConsoleOp::User(user.clone())).await? {
        ConsoleOut::User(u) => u,
        _ => None,
    };
    let now = now_ms();
    let phc = found.as_ref().map_or_else(
        || super::password::decoy().to_string(),
        |u| u.password_hash.clone(),
    );
    let password = f.password;
    let matches = tokio::task::spawn_blocking(move || super::password::verify(&password, &phc))
        .await
        .unwrap_or(false);
    let reason = match &found {
        None => Some("unknown user"),
        Some(u) if u.disabled => Some("disabled"),
        Some(u) if u.locked_until_ms.is_some_and(|t| t > now) => Some("locked"),
        Some(_) if !matches => Some("wrong password"),
        Some(_) => None,
    };
    if let Some(reason) = reason {
        let wait = c.throttle.failed(addr);
        let mut locked = reason == "locked";
        if reason == "wrong password" {
            let mut e = Event::new(now, EventKind::ConsoleLogin);
            e.detail =
                json!({ "user": user, "address": addr.to_string(), "ok": false, "reason": reason });
            let after = c
                .app
                .store
                .console(ConsoleOp::Attempt {
                    user: user.clone(),
                    ok: false,
                    at_ms: now,
                    lock_after: i64::from(settings.lock_after.max(1)),
                    lock_ms: session::minutes(settings.lock_minutes),
                    event: e,
                })
                .await?;
            if let ConsoleOut::User(Some(u)) = after {
                locked = u.locked_until_ms.is_some_and(|t| t > now);
            }
        } else {
            audit(&c, &user, addr, false, reason).await;
        }
        tokio::time::sleep(wait).await;
        let message = if locked {
            "该账户因多次登录失败已被锁定，请稍后再试或联系管理员。"
        } else {
            "用户名或密码错误。"
        };
        return Ok(refused(StatusCode::UNAUTHORIZED, message));
    }
    c.throttle.succeeded(addr);
    let mut e = Event::new(now, EventKind::ConsoleLogin);
    e.detail = json!({ "user": user, "address": addr.to_string(), "ok": true });
    c.app
        .store
        .console(ConsoleOp::Attempt {
            user: user.clone(),
            ok: true,
            at_ms: now,
            lock_after: i64::from(settings.lock_after.max(1)),
            lock_ms: 0,
            event: e,
        })
        .await?;
    let (token, s) = session::open(&user, settings);
    c.app.store.console(ConsoleOp::Open(s)).await?;
    let secure = c.app.config.gateway.tls.is_some();
    Ok((
        [(
            header::SET_COOKIE,
            session::set_cookie(&token, secure, false),
        )],
        Redirect::to("/console/"),
    )
        .into_response())
}

pub(super) async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    let secure = c.app.config.gateway.tls.is_some();
    if let Some((user, s)) =
        session::current(&*c.app.store, &c.app.config.console, &headers).await?
    {
        if !csrf_ok(&s, f.csrf.as_deref()) {
            return Ok(super::pages::forbidden("缺少或错误的 CSRF 令牌。"));
        }
        let mut e = Event::new(now_ms(), EventKind::ConsoleLogout);
        e.detail = json!({ "user": user.name });
        c.app
            .store
            .console(ConsoleOp::Close(s.id_sha256, e))
            .await?;
    }
    Ok((
        [(header::SET_COOKIE, session::set_cookie("", secure, true))],
        Redirect::to("/console/login"),
    )
        .into_response())
}
