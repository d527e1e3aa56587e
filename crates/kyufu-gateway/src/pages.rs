//! The citizen's pages, served by the gateway on the public port: the start page, the waiting
//! room, the application form and the status page. Server-rendered HTML in Japanese (English with
//! `?lang=en`, remembered in a cookie), readable at 360 px, usable with a keyboard and a screen
//! reader; no framework, no third-party assets, a strict Content-Security-Policy.
//!
//! - `GET /` explains the benefit and offers one button: join the queue (`POST /wait`).
//! - `GET /wait` is the waiting room: position, estimated wait, last update, the operator's
//!   message; it refreshes itself at the advertised interval (`<meta refresh>` in `<noscript>`
//!   without JavaScript; a live poll of `/queue/status` with it) and moves on to `/apply` once admitted.
//! - `GET /apply` is the form: the guardian once, then one block per child ("add another child"),
//!   each with its document (camera capture, preview, size check). The script submits one
//!   application per child through `POST /api/v1/applications` (the pass travels in its cookie),
//!   so one child's problem never blocks a sibling, and shows each child's application id and
//!   status link. The server remains the judge: its field errors are shown next to the fields.
//! - `GET /status#id=…&token=…` shows an application's steps, the reasons in plain words when a
//!   person must look, and the coupon code once issued. Id and token travel in the fragment, which
//!   browsers never send to a server, so no log line ever holds them.
//!
//! Every page reports its funnel steps (`POST /api/v1/funnel`, no personal data).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::queue::{self, Answer};
use crate::ticket::PASS_COOKIE;
use crate::Shared;

const LANG_COOKIE: &str = "kyufu_lang";
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("pages/app.css");
const WAIT_JS: &str = include_str!("pages/wait.js");
const FORM_JS: &str = include_str!("pages/form.js");
const STATUS_JS: &str = include_str!("pages/status.js");
const COMMON_JS: &str = include_str!("pages/common.js");
const DONE_JS: &str = include_str!("pages/done.js");
const LOST_JS: &str = include_str!("pages/lost.js");

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(home))
        .route("/wait", get(wait).post(join))
        .route("/apply", get(apply))
        .route("/status", get(status))
        .route("/done", get(done))
        .route("/lost", get(lost))
        .route("/assets/{name}", get(asset))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Lang {
    Ja,
    En,
}

impl Lang {
    fn code(self) -> &'static str {
        match self {
            Lang::Ja => "ja",
            Lang::En => "en",
        }
    }

    /// `?lang=` wins (and is remembered), then the cookie, then Japanese.
    fn pick(query: &HashMap<String, String>, headers: &HeaderMap) -> (Lang, bool) {
        match query.get("lang").map(String::as_str) {
            Some("en") => return (Lang::En, true),
            Some("ja") => return (Lang::Ja, true),
            _ => {}
        }
        let from_cookie = cookie(headers, LANG_COOKIE);
        (if from_cookie.as_deref() == Some("en") { Lang::En } else { Lang::Ja }, false)
    }

    fn t(self, ja: &'static str, en: &'static str) -> &'static str {
        match self {
            Lang::Ja => ja,
            Lang::En => en,
        }
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    kyufu_http::cookie(headers, name).map(str::to_owned)
}

use kyufu_http::html_escape as esc;

struct Page<'a> {
    lang: Lang,
    remember_lang: bool,
    title: &'a str,
    /// The path the language switch links to (the same page).
    path: &'a str,
    body: String,
    scripts: &'a [&'a str],
    refresh: Option<u64>,
}

impl Page<'_> {
    fn render(self) -> Response {
        let l = self.lang;
        let other = if l == Lang::Ja { ("en", "English") } else { ("ja", "日本語") };
        let mut html = String::with_capacity(self.body.len() + 2048);
        let _ = write!(
            html,
            "<!doctype html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} | {site}</title><link rel=\"stylesheet\" href=\"/assets/app.css\">",
            lang = l.code(),
            title = esc(self.title),
            site = l.t("こども食料支援 申請", "Child food support application"),
        );
        if let Some(secs) = self.refresh {
            // A page whose script polls by itself keeps the refresh for browsers without
            // JavaScript only: inside <noscript> it is never scheduled where scripts run (once
            // scheduled, removing the element does not cancel it, and the reload would cut the
            // script's own move to the form short).
            let (open, close) = if self.scripts.is_empty() { ("", "") } else { ("<noscript>", "</noscript>") };
            let _ = write!(html, "{open}<meta http-equiv=\"refresh\" content=\"{secs}\">{close}");
        }
        let _ = write!(
            html,
            "</head><body><a class=\"skip\" href=\"#main\">{skip}</a><header class=\"top\"><span class=\"site\">{site}</span>\
             <a class=\"lang\" href=\"{path}?lang={code}\" lang=\"{code}\" hreflang=\"{code}\">{label}</a></header>\
             <main id=\"main\" tabindex=\"-1\">{body}</main>\
             <footer><p>{help}</p></footer>",
            skip = l.t("本文へ移動", "Skip to content"),
            site = l.t("こども食料支援 申請", "Child food support application"),
            path = esc(self.path),
            code = other.0,
            label = other.1,
            body = self.body,
            help = l.t(
                "お困りのときは市区町村の窓口（平日 9時〜17時）へお問い合わせください。",
                "If you need help, contact your municipal office (weekdays 9:00–17:00)."
            ),
        );
        html.push_str("<script src=\"/assets/common.js\"></script>");
        for s in self.scripts {
            let _ = write!(html, "<script src=\"/assets/{s}\"></script>");
        }
        html.push_str("</body></html>");
        let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
        page_headers(resp.headers_mut(), self.lang, self.remember_lang);
        resp
    }
}

fn page_headers(h: &mut HeaderMap, lang: Lang, remember: bool) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if remember {
        let v = format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", lang.code());
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.append(header::SET_COOKIE, v);
        }
    }
}

/// `GET /`.
async fn home(Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let (l, remember) = Lang::pick(&q, &headers);
    let body = format!(
        "<h1>{h1}</h1><p>{p1}</p><ul class=\"points\"><li>{li1}</li><li>{li2}</li><li>{li3}</li></ul>\
         <form method=\"post\" action=\"/wait\"><button class=\"primary\" type=\"submit\">{btn}</button></form>\
         <p class=\"note\">{note}</p><p><a href=\"/status\">{status}</a></p>",
        h1 = l.t("お子さん1人につき5,000円分の食料支援", "Food support worth 5,000 yen per child"),
        p1 = l.t(
            "18歳未満のお子さんと妊娠中の方が対象です。お子さん1人ごとに申請します（兄弟姉妹は続けて申請できます）。",
            "Children under 18 and expectant mothers are eligible. Apply once per child (you can add brothers and sisters one after another)."
        ),
        li1 = l.t("保護者の本人確認書類の写真（JPEG・PNG・PDF、10MBまで）を用意してください。", "Have a photo of the guardian's identity document ready (JPEG, PNG or PDF, up to 10 MB)."),
        li2 = l.t("混み合っているときは順番待ちになります。順番は保たれます。", "When many people apply at once you will wait in a queue. Your place is kept."),
        li3 = l.t("申請後、状況をこのサイトで確認できます。クーポンはメールでもお知らせします。", "After applying you can check the status on this site. The coupon is also sent by email."),
        btn = l.t("申請を始める（順番待ちに並ぶ）", "Start (join the queue)"),
        note = l.t("入力した内容は申請の審査にだけ使います。", "What you enter is used only to review your application."),
        status = l.t("申請した内容の状況を確認する", "Check the status of an application"),
    );
    Page { lang: l, remember_lang: remember, title: l.t("申請のご案内", "How to apply"), path: "/", body, scripts: &[], refresh: None }
        .render()
}

/// `POST /wait`: join, then show the waiting room (or the form, if the door is free).
async fn join(State(gw): State<Arc<Shared>>, headers: HeaderMap, extensions: axum::http::Extensions) -> Response {
    let (l, _) = Lang::pick(&HashMap::new(), &headers);
    match queue::join_answer(&gw, queue::client_of(&gw, &extensions, &headers), None).await {
        Ok(answer) => {
            let to = if answer.pass.is_some() { "/apply" } else { "/wait" };
            let mut resp = Redirect::to(to).into_response();
            queue::set_cookies(&gw, &answer, resp.headers_mut());
            resp
        }
        Err(e) => trouble(l, e.code.as_str()),
    }
}

/// A page for when the queue cannot be reached or the ticket is unusable.
fn trouble(l: Lang, code: &str) -> Response {
    let body = format!(
        "<h1>{h1}</h1><p>{p}</p><form method=\"post\" action=\"/wait\"><button class=\"primary\" type=\"submit\">{btn}</button></form>\
         <p class=\"note\">{codel}: <code>{code}</code></p>",
        h1 = l.t("ただいまつながりにくくなっています", "We cannot reach the queue right now"),
        p = l.t("少し時間をおいて、もう一度お試しください。", "Please try again in a little while."),
        btn = l.t("もう一度並ぶ", "Join the queue again"),
        codel = l.t("お問い合わせ用コード", "Code for support"),
        code = esc(code),
    );
    let mut resp = Page { lang: l, remember_lang: false, title: l.t("お待ちください", "Please wait"), path: "/", body, scripts: &[], refresh: Some(30) }.render();
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp
}

/// `GET /wait`: the waiting room.
async fn wait(State(gw): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let (l, remember) = Lang::pick(&q, &headers);
    let answer: Answer = match queue::status_inner(&gw, &headers).await {
        Ok(a) => a,
        // No ticket, a forged or expired one: start again from the start page.
        Err(e) if e.code != kyufu_domain::ErrorCode::ServiceUnavailable => return Redirect::to("/").into_response(),
        Err(e) => return trouble(l, e.code.as_str()),
    };
    if answer.pass.is_some() {
        let mut resp = Redirect::to("/apply").into_response();
        queue::set_cookies(&gw, &answer, resp.headers_mut());
        return resp;
    }
    // The operator's words as typed; a pause without them is told in the page's language.
    let paused = || l.t("ただいま受付を一時停止しています。順番はそのまま保たれますので、このページのままお待ちください。", "Admission is paused for a moment. You keep your place: please wait on this page.");
    let message = gw
        .admission
        .message()
        .or_else(|| gw.admission.is_paused().then(|| paused().to_owned()))
        .map(|m| format!("<div class=\"notice\" role=\"status\"><strong>{}</strong> {}</div>", l.t("お知らせ", "Notice"), esc(&m)))
        .unwrap_or_default();
    // The notice as the poll's JSON states it: when a poll says otherwise (a pause or a message
    // set while this page is open), the script reloads the page, which words it in its language.
    let notice = format!(" data-notice=\"{}\"", esc(&queue::visitor_message(&gw).unwrap_or_default()));
    if let Some(opens_at) = answer.opens_at {
        return prequeue_page(&gw, &answer, l, remember, opens_at, &message, &notice);
    }
    let eta = match answer.eta {
        Some(s) if s < 60 => l.t("まもなく", "Any moment now").to_owned(),
        Some(s) => match l {
            Lang::Ja => format!("約{}分", s.div_ceil(60)),
            Lang::En => format!("About {} min", s.div_ceil(60)),
        },
        None => l.t("計算中です", "Being calculated").to_owned(),
    };
    let now = chrono_like_now_jst();
    let body = format!(
        "<h1>{h1}</h1>{message}\
         <div class=\"queue\" id=\"queue\" data-refresh=\"{refresh}\"{notice} aria-live=\"polite\">\
         <p class=\"big\"><span class=\"label\">{posl}</span> <span id=\"position\">{position}</span><span class=\"unit\">{posu}</span></p>\
         <p><span class=\"label\">{etal}</span> <span id=\"eta\">{eta}</span></p>\
         <p class=\"updated\"><span class=\"label\">{updl}</span> <time id=\"updated\">{now}</time></p></div>\
         <div class=\"reassure\"><p><strong>{r1}</strong></p><p>{r2}</p></div>\
         <noscript><p class=\"note\">{nojs}</p></noscript>\
         <template id=\"wait-strings\" data-soon=\"{soon}\" data-min=\"{minfmt}\" data-unknown=\"{unknown}\"></template>",
        h1 = l.t("ただいま順番待ちです", "You are in the queue"),
        posl = l.t("あなたの順番", "Your place"),
        position = answer.position,
        posu = l.t("番目", ""),
        etal = l.t("お待ちいただく時間の目安", "Estimated wait"),
        updl = l.t("最終更新", "Last updated"),
        refresh = answer.refresh_after,
        r1 = l.t("このページを開いたままお待ちください。再読み込みは不要です。", "Keep this page open. You do not need to reload it."),
        r2 = l.t(
            "順番は保たれています。自動で更新され、順番が来ると申請フォームに進みます。",
            "Your place is kept. The page updates by itself and opens the application form when it is your turn."
        ),
        nojs = l.t("このページは数秒ごとに自動で更新されます。", "This page refreshes itself every few seconds."),
        soon = l.t("まもなく", "Any moment now"),
        minfmt = l.t("約{n}分", "About {n} min"),
        unknown = l.t("計算中です", "Being calculated"),
    );
    waiting_room(&gw, &answer, l, remember, l.t("順番待ち", "Waiting room"), body)
}

/// A waiting-room page: refreshes at the advertised interval and carries the ticket cookie.
fn waiting_room(gw: &Shared, answer: &Answer, l: Lang, remember: bool, title: &'static str, body: String) -> Response {
    let mut resp = Page {
        lang: l,
        remember_lang: remember,
        title,
        path: "/wait",
        body,
        scripts: &["wait.js"],
        refresh: Some(answer.refresh_after.max(1)),
    }
    .render();
    queue::set_cookies(gw, answer, resp.headers_mut());
    resp
}

/// The waiting room before the opening time: no place yet, and why arriving early does not help.
fn prequeue_page(gw: &Shared, answer: &Answer, l: Lang, remember: bool, opens_at: u64, message: &str, notice: &str) -> Response {
    let hhmm = jst_hhmm(opens_at);
    let body = format!(
        "<h1>{h1}</h1>{message}\
         <div class=\"queue\" id=\"queue\" data-refresh=\"{refresh}\" data-prequeue=\"1\"{notice} aria-live=\"polite\">\
         <p class=\"big\"><span class=\"label\">{opensl}</span> <time>{hhmm}</time></p></div>\
         <div class=\"reassure\"><p><strong>{r1}</strong></p><p>{r2}</p><p>{r3}</p></div>\
         <p class=\"note\"><a href=\"/queue/fairness\">{how}</a></p>\
         <noscript><p class=\"note\">{nojs}</p></noscript>",
        h1 = l.t("まだ受付開始前です", "The queue has not opened yet"),
        opensl = l.t("受付開始", "The queue opens at"),
        refresh = answer.refresh_after,
        r1 = match l {
            Lang::Ja => format!("受付は {hhmm} に始まります。それまでに来られた方は全員、開始時に無作為に順番が決まります。"),
            Lang::En => format!("The queue opens at {hhmm}. Everyone who arrives before then gets a random place at opening."),
        },
        r2 = l.t("早く来ても有利にはなりません。開始時刻までに来ていれば、順番はみな同じ条件で決まります。", "Arriving early gives no advantage: everyone here before the opening has the same chance."),
        r3 = l.t("このページを開いたままお待ちください。開始後、あなたの順番が表示されます。", "Keep this page open. After the opening it shows your place."),
        how = l.t("順番の決め方（公開情報）", "How the order is drawn (published)"),
        nojs = l.t("このページは数秒ごとに自動で更新されます。", "This page refreshes itself every few seconds."),
    );
    waiting_room(gw, answer, l, remember, l.t("受付開始前", "Before opening"), body)
}

/// Seconds of the day in Japan time (the program's time zone), without a time-zone database.
fn jst_day_secs(unix: u64) -> u64 {
    (unix + 9 * 3600) % 86_400
}

/// `HH:MM` of a Unix time in Japan time.
fn jst_hhmm(unix: u64) -> String {
    let day = jst_day_secs(unix);
    format!("{:02}:{:02}", day / 3600, day % 3600 / 60)
}

/// `HH:MM:SS` now in Japan time.
fn chrono_like_now_jst() -> String {
    let day = jst_day_secs(queue::now_secs());
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// `GET /apply`: the application form (needs the admission pass cookie; without it, the queue).
async fn apply(State(gw): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let (l, remember) = Lang::pick(&q, &headers);
    let Some(pass) = cookie(&headers, PASS_COOKIE) else {
        return Redirect::to("/wait").into_response();
    };
    // When the pass runs out, so the page can state it and warn before (the pass cookie is
    // HttpOnly, so the script cannot read it).
    let expires = kyufu_admission::verify_pass(&gw.config.keyring, &pass, &gw.config.event_id, queue::now_secs()).map(|c| c.exp).unwrap_or(0);
    let body = form_body(l).replacen("<form id=\"apply\"", &format!("<form id=\"apply\" data-expires=\"{expires}\""), 1);
    Page { lang: l, remember_lang: remember, title: l.t("申請フォーム", "Application form"), path: "/apply", body, scripts: &["form.js"], refresh: None }
        .render()
}

fn field(l: Lang, id: &str, ja: &'static str, en: &'static str, kind: &str, extra: &str, hint: Option<(&'static str, &'static str)>) -> String {
    let hint_html = hint.map(|(hj, he)| format!("<span class=\"hint\" id=\"{id}-hint\">{}</span>", l.t(hj, he))).unwrap_or_default();
    let described = if hint.is_some() { format!("{id}-hint {id}-error") } else { format!("{id}-error") };
    format!(
        "<div class=\"field\"><label for=\"{id}\">{label}</label>{hint_html}\
         <input id=\"{id}\" name=\"{id}\" type=\"{kind}\" {extra} aria-describedby=\"{described}\">\
         <span class=\"error\" id=\"{id}-error\" role=\"alert\"></span></div>",
        label = l.t(ja, en),
    )
}

fn person_fields(l: Lang, p: &str) -> String {
    let mut s = String::new();
    s += &field(l, &format!("{p}family_name"), "姓（漢字）", "Family name (kanji)", "text", "autocomplete=\"family-name\" required", Some(("例：山田", "e.g. 山田")));
    s += &field(l, &format!("{p}given_name"), "名（漢字）", "Given name (kanji)", "text", "autocomplete=\"given-name\" required", Some(("例：花子", "e.g. 花子")));
    s += &field(l, &format!("{p}family_name_kana"), "姓（フリガナ）", "Family name (katakana)", "text", "required", Some(("例：ヤマダ（ひらがなでも可）", "e.g. ヤマダ (hiragana is fine too)")));
    s += &field(l, &format!("{p}given_name_kana"), "名（フリガナ）", "Given name (katakana)", "text", "required", Some(("例：ハナコ", "e.g. ハナコ")));
    s += &field(l, &format!("{p}birth_date"), "生年月日", "Date of birth", "date", "required", None);
    s += &field(
        l,
        &format!("{p}resident_id"),
        "住民票コード（任意）",
        "Resident record code (optional)",
        "text",
        "inputmode=\"numeric\" autocomplete=\"off\"",
        Some(("わかる場合のみ。11桁の数字", "Only if you know it: 11 digits")),
    );
    s
}

fn form_body(l: Lang) -> String {
    let mut guardian = person_fields(l, "guardian.");
    guardian += &field(l, "guardian.postal_code", "郵便番号", "Postal code", "text", "inputmode=\"numeric\" autocomplete=\"postal-code\" required", Some(("例：123-4567", "e.g. 123-4567")));
    guardian += &field(l, "guardian.email", "メールアドレス", "Email address", "email", "autocomplete=\"email\" required", Some(("クーポンのお知らせを送ります", "We send the coupon here")));
    guardian += &field(l, "guardian.phone", "電話番号", "Phone number", "tel", "autocomplete=\"tel\" required", Some(("例：090-1234-5678", "e.g. 090-1234-5678")));
    let child = format!(
        "<fieldset class=\"child\" data-child><legend><span data-child-title>{title}</span></legend><div data-person>{fields}</div>\
         <div class=\"field\"><label for=\"child.document\">{doc}</label><span class=\"hint\" id=\"child.document-hint\">{dochint}</span>\
         <input id=\"child.document\" name=\"child.document\" type=\"file\" accept=\"image/jpeg,image/png,application/pdf\" capture=\"environment\" required aria-describedby=\"child.document-hint child.document-error\">\
         <img class=\"preview\" alt=\"{preview}\" hidden><span class=\"error\" id=\"child.document-error\" role=\"alert\"></span></div>\
         <button type=\"button\" class=\"secondary\" data-remove hidden>{remove}</button></fieldset>",
        title = l.t("お子さん", "Child"),
        fields = person_fields(l, "child."),
        doc = l.t("保護者の本人確認書類の写真", "Photo of the guardian's identity document"),
        dochint = l.t("運転免許証・マイナンバーカードなど。JPEG・PNG・PDF、10MBまで。カメラで撮影できます。", "Driving licence, My Number card, etc. JPEG, PNG or PDF, up to 10 MB. You can use the camera."),
        preview = l.t("選んだ書類の写真", "The document you chose"),
        remove = l.t("このお子さんを取り消す", "Remove this child"),
    );
    let msgs = messages_json(l);
    format!(
        "<h1>{h1}</h1><p id=\"intro\">{intro}</p><p id=\"pass-time\" class=\"notice\" role=\"status\" hidden></p>\
         <p id=\"restored\" class=\"notice\" hidden>{restored}</p><noscript><p class=\"error-summary\">{nojs}</p></noscript><div id=\"form-errors\" class=\"error-summary\" role=\"alert\" tabindex=\"-1\" hidden></div>\
         <form id=\"apply\" novalidate>{kind}\
         <fieldset id=\"guardian\"><legend data-child-label=\"{gl}\" data-mother-label=\"{ml}\">{gl}</legend>{guardian}</fieldset>{expectant}\
         <div id=\"children\">{child}</div>\
         <button type=\"button\" class=\"secondary\" id=\"add-child\">{add}</button>\
         <div class=\"field check\"><input id=\"consent\" name=\"consent\" type=\"checkbox\" required aria-describedby=\"consent-error\">\
         <label for=\"consent\">{consent}</label><span class=\"error\" id=\"consent-error\" role=\"alert\"></span></div>\
         <button type=\"submit\" class=\"primary\">{next}</button></form>\
         <section id=\"confirm\" hidden tabindex=\"-1\"><h2>{ch}</h2><p>{cp}</p><div id=\"confirm-list\"></div>\
         <button type=\"button\" class=\"primary\" id=\"send\">{send}</button> <button type=\"button\" class=\"secondary\" id=\"back\">{back}</button></section>\
         <section id=\"done\" hidden tabindex=\"-1\"><h2>{dh}</h2><p>{dp}</p><ol id=\"done-list\"></ol><p class=\"note\" id=\"done-next\" hidden>{dn}</p></section>\
         <script type=\"application/json\" id=\"msgs\">{msgs}</script>",
        h1 = l.t("申請フォーム", "Application form"),
        intro = l.t(
            "保護者の情報は1回だけ入力します。お子さんごとに申請が作られます。「任意」と書かれた項目以外はすべて入力してください。",
            "Enter the guardian's details once. One application is made for each child. Fill in every field not marked optional."
        ),
        nojs = l.t(
            "このフォームを送信するには JavaScript を有効にしてください。難しい場合は市区町村の窓口でも申請できます。",
            "Please turn on JavaScript to send this form. You can also apply at your municipal office."
        ),
        gl = l.t("保護者（申請する方）", "Guardian (the person applying)"),
        ml = l.t("申請する方（妊娠中のご本人）", "You (the expectant mother applying)"),
        restored = l.t("入力途中の内容を戻しました。", "We have put back what you had entered."),
        kind = kind_choice(l),
        expectant = expectant_fields(l),
        add = l.t("＋ お子さんを追加する（兄弟姉妹）", "+ Add another child (brother or sister)"),
        consent = l.t("入力内容を住民基本台帳と照合することに同意します。", "I agree that my answers are checked against the resident registry."),
        next = l.t("入力内容を確認する", "Check my answers"),
        ch = l.t("入力内容の確認", "Check your answers"),
        cp = l.t("内容がよければ「送信する」を押してください。", "If everything is right, press Send."),
        send = l.t("送信する", "Send"),
        back = l.t("戻って直す", "Go back and change"),
        dh = l.t("申請を受け付けました", "Your applications were received"),
        dp = DONE_INTRO.pick(l),
        dn = l.t(
            "受付はこれで終了しました。あとからほかのお子さんの申請をするときは、もう一度はじめから順番待ちに並んでください。",
            "Your turn is now finished. To apply for another child later, please join the queue again from the start page."
        ),
    )
}

/// Who the application is for: a child (the default) or an expectant mother for herself.
fn kind_choice(l: Lang) -> String {
    format!(
        "<fieldset id=\"kind\"><legend>{legend}</legend>\
         <div class=\"field check\"><input id=\"kind-child\" name=\"kind\" type=\"radio\" value=\"child\" checked>\
         <label for=\"kind-child\">{child}</label></div>\
         <div class=\"field check\"><input id=\"kind-mother\" name=\"kind\" type=\"radio\" value=\"expectant_mother\">\
         <label for=\"kind-mother\">{mother}</label></div></fieldset>",
        legend = l.t("どなたの分を申請しますか", "Who are you applying for?"),
        child = l.t("18歳未満のお子さん（兄弟姉妹は続けて追加できます）", "A child under 18 (you can add brothers and sisters)"),
        mother = l.t("妊娠中の方ご本人（出産予定日を入力します）", "Myself, as an expectant mother (you give the expected delivery date)"),
    )
}

/// The expectant mother's own question: the expected delivery date (shown only for that choice).
fn expectant_fields(l: Lang) -> String {
    format!(
        "<fieldset id=\"expectant\" hidden><legend>{legend}</legend>{date}</fieldset>",
        legend = l.t("妊娠・出産について", "Your pregnancy"),
        date = field(
            l,
            "expected_delivery_date",
            "出産予定日",
            "Expected delivery date",
            "date",
            "required",
            Some(("母子健康手帳に書かれた日付", "The date in your maternal and child health handbook"))
        ),
    )
}

/// What the completion page says above the receipts (the form and `/done` share it).
const DONE_INTRO: (&str, &str) = (
    "申請ごとの申請番号と確認用コードです。メモするか、この画面を撮影してください。状況は「状況を確認する」のリンクか、状況確認のページで申請番号と確認用コードを入力して確認できます。同じ内容をメールでもお送りします。",
    "Here is each application's number and status code. Write them down or take a screenshot. You can check the status with the link, or by typing the number and the code on the status page. We also send them to you by email.",
);

trait Pick {
    fn pick(self, l: Lang) -> &'static str;
}

impl Pick for (&'static str, &'static str) {
    fn pick(self, l: Lang) -> &'static str {
        l.t(self.0, self.1)
    }
}

/// `GET /done`: the completion page at its own address. The receipts come from this browser's
/// storage (the server keeps no session), so it survives a reload and needs no admission pass.
async fn done(Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let (l, remember) = Lang::pick(&q, &headers);
    let body = format!(
        "<h1>{h1}</h1><div id=\"some\" hidden><p>{intro}</p><ol id=\"done-list\"></ol>\
         <p class=\"note\">{shared}</p><button type=\"button\" class=\"secondary\" id=\"forget\">{forget}</button></div>\
         <div id=\"none\"><p>{none}</p></div><p><a href=\"/status\">{status}</a></p><p><a href=\"/lost\">{lost}</a></p>\
         <noscript><p class=\"note\">{nojs}</p></noscript><script type=\"application/json\" id=\"msgs\">{msgs}</script>",
        h1 = l.t("申請を受け付けました", "Your applications were received"),
        intro = DONE_INTRO.pick(l),
        shared = l.t("共用の端末では、控えを取ったあと「この端末から消す」を押してください。", "On a shared phone or computer, press \"Remove from this device\" once you have a copy."),
        forget = l.t("この端末から消す", "Remove from this device"),
        none = l.t("この端末には申請の控えが残っていません。メールをご確認いただくか、下のリンクから確認してください。", "This device has no copy of your applications. Please look in your email, or use the links below."),
        status = l.t("申請番号と確認用コードで状況を確認する", "Check the status with the number and the code"),
        lost = l.t("申請番号やリンクがわからなくなった方", "Lost your number or link?"),
        nojs = l.t("控えの表示には JavaScript が必要です。メールでもお知らせしています。", "Showing your copy needs JavaScript. We also sent it by email."),
        msgs = messages_json(l),
    );
    Page { lang: l, remember_lang: remember, title: l.t("申請を受け付けました", "Applications received"), path: "/done", body, scripts: &["done.js"], refresh: None }
        .render()
}

/// `GET /lost`: "lost your number or link?" — the links are sent again to the address given in
/// the application (`POST /api/v1/links`); the page says the same whether or not it is known.
async fn lost(Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let (l, remember) = Lang::pick(&q, &headers);
    let pairs: &[(&str, &str, &str)] = &[
        ("invalid_email", "メールアドレスの形が正しくありません（例：name@example.jp）。", "This email address does not look right (e.g. name@example.jp)."),
        (
            "sent",
            "このアドレスで申請があれば、申請番号・確認用コード・確認用リンクをそのアドレスに送りました。数分たっても届かない場合は、迷惑メールのフォルダもご確認ください。再送は15分に1回までです。",
            "If applications were made with this address, we have sent their numbers, codes and links to it. If nothing arrives within a few minutes, look in your spam folder. You can ask once every 15 minutes.",
        ),
        ("network", "通信できませんでした。電波の良い場所でもう一度お試しください。", "We could not connect. Please try again where the signal is better."),
        ("too_many_requests", "混み合っています。少し待ってからもう一度お試しください。", "We are busy. Please wait a moment and try again."),
    ];
    let map: serde_json::Map<String, serde_json::Value> =
        pairs.iter().map(|(k, ja, en)| ((*k).to_owned(), serde_json::Value::from(l.t(ja, en)))).collect();
    let msgs = serde_json::Value::Object(map).to_string().replace("</", "<\\/");
    let body = format!(
        "<h1>{h1}</h1><p>{p}</p><form id=\"lost\" novalidate>{email}<button class=\"primary\" type=\"submit\">{btn}</button></form>\
         <p id=\"lost-result\" role=\"status\" aria-live=\"polite\"></p><p><a href=\"/status\">{status}</a></p>\
         <noscript><p class=\"note\">{nojs}</p></noscript><script type=\"application/json\" id=\"msgs\">{msgs}</script>",
        h1 = l.t("申請番号やリンクがわからなくなった方", "Lost your application number or link?"),
        p = l.t(
            "申請のときに入力したメールアドレスを入れてください。そのアドレスに、申請ごとの申請番号・確認用コード・状況確認のリンクをもう一度お送りします。ほかのアドレスには送りません。",
            "Enter the email address you gave in the application. We send each application's number, code and status link to that address again, and to no other."
        ),
        email = field(l, "lost-email", "メールアドレス", "Email address", "email", "autocomplete=\"email\" required", None),
        btn = l.t("もう一度送る", "Send them again"),
        status = l.t("申請番号と確認用コードで状況を確認する", "Check the status with the number and the code"),
        nojs = l.t("このページには JavaScript が必要です。窓口でもお調べします。", "This page needs JavaScript. Your municipal office can also help."),
    );
    Page { lang: l, remember_lang: remember, title: l.t("リンクの再送", "Send my links again"), path: "/lost", body, scripts: &["lost.js"], refresh: None }
        .render()
}

/// Messages the scripts show, in the page's language: field error codes, API error codes, labels.
fn messages_json(l: Lang) -> String {
    let pairs: &[(&str, &str, &str)] = &[
        ("required", "入力してください。", "Please fill this in."),
        ("invalid_email", "メールアドレスの形が正しくありません（例：name@example.jp）。", "This email address does not look right (e.g. name@example.jp)."),
        ("invalid_postal_code", "郵便番号は7桁の数字で入力してください（例：123-4567）。", "Enter the postal code as 7 digits (e.g. 123-4567)."),
        ("invalid_phone", "電話番号を数字で入力してください（例：090-1234-5678）。", "Enter the phone number in digits (e.g. 090-1234-5678)."),
        ("must_be_kana", "フリガナはカタカナかひらがなで入力してください。", "Use katakana or hiragana for the reading."),
        ("in_future", "未来の日付は入力できません。", "This date cannot be in the future."),
        ("over_age", "18歳未満のお子さんが対象です。生年月日をご確認ください。", "Children under 18 are eligible. Please check the date of birth."),
        ("delivery_date_past", "出産予定日は今日以降の日付を入力してください。", "The expected delivery date must be today or later."),
        ("delivery_date_too_far", "出産予定日が先すぎます。母子健康手帳の日付を確認してください。", "This delivery date is too far ahead. Please check the date in your handbook."),
        ("mother", "申請する方（妊娠中のご本人）", "You (expectant mother)"),
        ("expected_delivery_date", "出産予定日", "Expected delivery date"),
        ("invalid_date", "日付が正しくありません。", "This date is not valid."),
        ("invalid_resident_id", "住民票コードは11桁の数字です。わからなければ空欄にしてください。", "The resident record code is 11 digits. Leave it empty if you do not know it."),
        ("invalid_characters", "使えない文字が含まれています。", "This contains characters we cannot accept."),
        ("too_long", "長すぎます。", "This is too long."),
        ("consent_required", "同意のチェックが必要です。", "Please tick to agree."),
        ("document_missing", "書類の写真を選んでください。", "Please choose a photo of the document."),
        ("document_too_large", "ファイルが大きすぎます（10MBまで）。写真を撮り直すか、小さくしてください。", "The file is too large (10 MB at most). Take the photo again or make it smaller."),
        ("unsupported_document_type", "JPEG・PNG・PDFのファイルを選んでください。", "Please choose a JPEG, PNG or PDF file."),
        ("empty_document", "ファイルが空です。選び直してください。", "The file is empty. Please choose it again."),
        ("document_unreadable", "画像が壊れているか途中までしかなく、読み取れませんでした。撮り直すか、別のファイルを選んでください。", "We could not read the image: it is damaged or incomplete. Take the photo again or choose another file."),
        ("document_too_many_pixels", "画像の画素数が多すぎます（4000万画素まで）。解像度を下げて撮り直してください。", "The image has too many pixels (40 megapixels at most). Take the photo at a lower resolution."),
        ("document_active_content", "このPDFにはスクリプトや添付ファイルなどが含まれているため受け付けられません。書類の写真か、普通にスキャンしたPDFを選んでください。", "This PDF contains scripts, actions or attached files, which we cannot accept. Choose a photo of the document or a plain scanned PDF."),
        ("document_infected", "このファイルはウイルス検査で問題が見つかったため保存していません。書類を撮り直した写真か、別のスキャンを選んでください。", "Our virus check flagged this file, so it was not saved. Please upload a different photo or scan of the document."),
        ("scanner_unavailable", "ただいま書類の検査ができないため、保存していません。少し待ってからもう一度送信してください。入力内容は残っています。", "We cannot check documents right now, so nothing was saved. Please try again shortly; your answers are kept."),
        ("admission_required", "受付時間が切れました。入力内容はこの端末に残っています。ここからもう一度順番待ちに並ぶと、続きから送信できます。", "Your turn has timed out. What you entered is kept on this device: join the queue again from here and you can send it."),
        ("admission_invalid", "受付時間が切れました。入力内容はこの端末に残っています。ここからもう一度順番待ちに並ぶと、続きから送信できます。", "Your turn has timed out. What you entered is kept on this device: join the queue again from here and you can send it."),
        ("admission_expired", "受付時間が切れました。入力内容はこの端末に残っています。ここからもう一度順番待ちに並ぶと、続きから送信できます。", "Your turn has timed out. What you entered is kept on this device: join the queue again from here and you can send it."),
        ("admission_spent", "この受付はすでに使い終わっています。ほかのお子さんの申請は、もう一度順番待ちに並んでください。", "This turn has already been used to send applications. To apply for another child, please join the queue again."),
        ("admission_limit_reached", "この受付で送れる申請の数の上限に達しました。さらにお子さんの申請が必要な場合は、市の窓口にお問い合わせください。", "This turn has sent as many applications as one household may send. To apply for more children, please contact the city office."),
        ("too_many_requests", "混み合っています。少し待ってからもう一度送信してください。", "We are busy. Please wait a moment and send again."),
        ("overloaded", "混み合っています。少し待ってからもう一度送信してください。", "We are busy. Please wait a moment and send again."),
        ("service_unavailable", "ただいまつながりにくくなっています。少し待ってからもう一度送信してください。入力内容は残っています。", "We cannot take applications right now. Please try again shortly; your answers are kept."),
        ("network", "通信できませんでした。電波の良い場所でもう一度送信してください。入力内容は残っています。", "We could not connect. Please send again where the signal is better; your answers are kept."),
        ("fix_errors", "入力内容を確認してください。", "Please check the highlighted answers."),
        ("child", "お子さん", "Child"),
        ("application_id", "申請番号", "Application number"),
        ("reference", "申請番号", "Application number"),
        ("lookup_code", "確認用コード", "Status code"),
        ("status_link", "状況を確認する", "Check the status"),
        ("failed", "このお子さんの申請は送れませんでした", "This child's application could not be sent"),
        ("retry", "もう一度送信する", "Send again"),
        ("guardian", "保護者", "Guardian"),
        ("document", "書類", "Document"),
        ("document_block", "本人確認書類", "Identity document"),
        ("pass_until", "受付時間は {t} までです（残り約{n}分）。時間内に送信してください。入力内容はこの端末に保存されています。", "Your turn lasts until {t} (about {n} min left). Please send before then; what you enter is kept on this device."),
        ("pass_soon", "まもなく受付時間（{t}）が終わります。残り約{n}分です。すぐに送信してください。", "Your turn ends soon ({t}), in about {n} min. Please send now."),
        ("photo_again", "写真をもう一度選んでください（ページを開き直したため消えました）。", "Please choose the photo again (it was lost when the page was opened again)."),
        ("pass_over", "受付時間が終わりました。入力内容はこの端末に残っています。もう一度順番待ちに並ぶと、続きから送信できます。", "Your turn has ended. What you entered is kept on this device: join the queue again and you can send it."),
        ("uploading", "書類の送信状況", "Document upload progress"),
        ("sending", "送信しています…", "Sending…"),
    ];
    let map: serde_json::Map<String, serde_json::Value> =
        pairs.iter().map(|(k, ja, en)| ((*k).to_owned(), serde_json::Value::from(l.t(ja, en)))).collect();
    // Inside <script type="application/json">, only "</" could end the element early.
    serde_json::Value::Object(map).to_string().replace("</", "<\\/")
}

/// `GET /status`: one application's progress; the id and token come in the URL fragment.
async fn status(State(gw): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap) -> Response {
    let (l, remember) = Lang::pick(&q, &headers);
    let pairs: &[(&str, &str, &str)] = &[
        ("received", "受付", "Received"),
        ("checking", "確認中", "Being checked"),
        ("approved", "承認", "Approved"),
        ("coupon_issued", "クーポン発行", "Coupon issued"),
        ("coupon", "クーポン番号", "Coupon code"),
        ("redeem", "クーポンを使う", "Use the coupon"),
        ("not_found", "申請が見つかりません。申請番号と確認用コードをご確認ください。", "We could not find this application. Please check the number and the code."),
        ("unavailable", "ただいま確認できません。少し待ってからもう一度お試しください。", "We cannot check right now. Please try again shortly."),
        ("reasons", "確認が必要な点", "What needs checking"),
        ("updated", "最終更新", "Last updated"),
        ("current", "現在の状況", "Current status"),
    ];
    let mut map: serde_json::Map<String, serde_json::Value> =
        pairs.iter().map(|(k, ja, en)| ((*k).to_owned(), serde_json::Value::from(l.t(ja, en)))).collect();
    // The status words are the emails' too (`Status::label`).
    for &s in kyufu_domain::Status::ALL {
        let (ja, en) = s.label();
        map.insert(format!("status_{}", s.as_str()), l.t(ja, en).into());
    }
    map.insert("redemption_url".into(), gw.config.redemption_url.clone().into());
    map.insert("lang".into(), l.code().into());
    let msgs = serde_json::Value::Object(map).to_string().replace("</", "<\\/");
    let body = format!(
        "<h1>{h1}</h1><div id=\"result\" aria-live=\"polite\"></div>\
         <form id=\"lookup\"><p>{p}</p>{id}{token}<button class=\"primary\" type=\"submit\">{btn}</button></form>\
         <p><a href=\"/lost\">{lost}</a></p>\
         <noscript><p class=\"note\">{nojs}</p></noscript><script type=\"application/json\" id=\"msgs\">{msgs}</script>",
        h1 = l.t("申請の状況", "Application status"),
        lost = l.t("申請番号やリンクがわからなくなった方", "Lost your number or link?"),
        p = l.t("申請番号と確認用コードは、申請完了の画面とメールに書いてあります。", "The application number and the code are on the confirmation page and in the email."),
        id = field(l, "lookup-id", "申請番号", "Application number", "text", "autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" required", Some(("例：7K3QX-M2P9D（10文字）", "e.g. 7K3QX-M2P9D (10 characters)"))),
        token = field(l, "lookup-token", "確認用コード", "Status code", "text", "autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" required", Some(("例：AB12-CD34（8文字）", "e.g. AB12-CD34 (8 characters)"))),
        btn = l.t("確認する", "Check"),
        nojs = l.t("状況の表示には JavaScript が必要です。メールのリンクからも確認できます。", "Showing the status needs JavaScript. You can also use the link in the email."),
    );
    Page { lang: l, remember_lang: remember, title: l.t("申請の状況", "Application status"), path: "/status", body, scripts: &["status.js"], refresh: None }
        .render()
}

/// Every unknown path: for a browser (it asks for `text/html`) an HTML page in the visitor's
/// language with the ways on — a mistyped address must not show raw JSON; for API clients and
/// under `/api/` the standard JSON `not_found`.
pub(crate) async fn not_found(uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let browser = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if !browser || uri.path().starts_with("/api/") {
        return kyufu_http::not_found().await.into_response();
    }
    let (l, _) = Lang::pick(&HashMap::new(), &headers);
    let body = format!(
        "<h1>{h1}</h1><p>{p}</p><ul class=\"points\"><li><a href=\"/\">{home}</a></li><li><a href=\"/status\">{status}</a></li>\
         <li><a href=\"/lost\">{lost}</a></li></ul>",
        h1 = l.t("ページが見つかりません", "Page not found"),
        p = l.t("アドレスが間違っているか、ページが移動しました。次のどれかからお進みください。", "The address is wrong or the page has moved. Please go on from one of these."),
        home = l.t("申請のご案内（はじめから）", "How to apply (start)"),
        status = l.t("申請の状況を確認する", "Check the status of an application"),
        lost = l.t("申請番号やリンクがわからなくなった方", "Lost your number or link?"),
    );
    let mut resp = Page { lang: l, remember_lang: false, title: l.t("ページが見つかりません", "Page not found"), path: "/", body, scripts: &[], refresh: None }.render();
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp
}

/// `GET /assets/{name}`: the stylesheet and scripts, compiled into the binary.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, ct) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "wait.js" => (WAIT_JS, "text/javascript; charset=utf-8"),
        "form.js" => (FORM_JS, "text/javascript; charset=utf-8"),
        "status.js" => (STATUS_JS, "text/javascript; charset=utf-8"),
        "common.js" => (COMMON_JS, "text/javascript; charset=utf-8"),
        "done.js" => (DONE_JS, "text/javascript; charset=utf-8"),
        "lost.js" => (LOST_JS, "text/javascript; charset=utf-8"),
        _ => return kyufu_http::not_found().await.into_response(),
    };
    let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(esc("<script>\"x\" & 'y'</script>"), "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;");
    }

    #[test]
    fn language_comes_from_query_then_cookie_then_japanese() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::pick(&HashMap::new(), &h), (Lang::Ja, false));
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; kyufu_lang=en"));
        assert_eq!(Lang::pick(&HashMap::new(), &h), (Lang::En, false));
        let q: HashMap<String, String> = [("lang".to_owned(), "ja".to_owned())].into();
        assert_eq!(Lang::pick(&q, &h), (Lang::Ja, true));
        let q: HashMap<String, String> = [("lang".to_owned(), "<x>".to_owned())].into();
        assert_eq!(Lang::pick(&q, &h), (Lang::En, false), "unknown values are ignored");
    }

    #[test]
    fn embedded_messages_cannot_close_their_script_element() {
        for l in [Lang::Ja, Lang::En] {
            let m = messages_json(l);
            assert!(!m.contains("</"), "{m}");
            let v: serde_json::Value = serde_json::from_str(&m).expect("valid JSON");
            assert!(v["required"].as_str().is_some_and(|s| !s.is_empty()));
        }
    }

    #[test]
    fn every_document_refusal_has_plain_words_in_both_languages() {
        let (ja, en): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&messages_json(Lang::Ja)).expect("ja"),
            serde_json::from_str(&messages_json(Lang::En)).expect("en"),
        );
        let codes = [
            "document_too_large",
            "unsupported_document_type",
            "empty_document",
            "document_unreadable",
            "document_too_many_pixels",
            "document_active_content",
            "document_infected",
            "scanner_unavailable",
        ];
        for code in codes {
            let (j, e) = (ja[code].as_str().unwrap_or_default(), en[code].as_str().unwrap_or_default());
            assert!(!j.is_empty() && !e.is_empty() && j != e, "{code}: {j:?} / {e:?}");
        }
    }
}
