//! Server-rendered pages of the console (Japanese, plain HTML; one small script, `console.js`,
//! for the lease renewal, zoom and rotation and the keyboard). Everything shown is escaped;
//! nothing here is reachable without a reviewer login. Times are Japan time (UTC+9).

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use kyufu_domain::application::Application;
use kyufu_domain::normalize::kana_key;
use kyufu_domain::{ReasonCode, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{ApplicationRecord, Lease};
use kyufu_registry::{Registry, Resident};

use crate::{Listing, LEASE_SECS, PAGE_SIZE, RENEW_SECS};

pub use kyufu_http::html_escape as esc;

fn jst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).expect("UTC+9 is a valid offset")
}

/// `2026-04-01 09:30` in Japan time.
pub fn jst_datetime(t: DateTime<Utc>) -> String {
    t.with_timezone(&jst()).format("%Y-%m-%d %H:%M").to_string()
}

/// `09:30:15` in Japan time.
pub fn jst_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&jst()).format("%H:%M:%S").to_string()
}

pub fn status_ja(s: Status) -> &'static str {
    match s {
        Status::Received => "受付",
        Status::Duplicate => "重複",
        Status::NeedsReview => "審査待ち",
        Status::Approved => "承認",
        Status::Rejected => "却下",
        Status::CouponIssued => "クーポン発行",
    }
}

const STYLE: &str = "body{font-family:system-ui,'Noto Sans JP',sans-serif;margin:0;color:#1a1a1a;background:#f6f7f9}\
header{background:#123a6b;color:#fff;padding:.5rem 1rem;display:flex;gap:1rem;align-items:center;justify-content:space-between}\
header a,header button{color:#fff}header form{display:inline}header button{background:none;border:1px solid #fff;padding:.2rem .6rem;font-size:.9rem}\
main{padding:1rem;max-width:90rem;margin:auto}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{border:1px solid #ccd;padding:.35rem .5rem;text-align:left;vertical-align:top}th{background:#e8ecf3}\
.warn{background:#fff4d6;border:1px solid #e0b400;padding:.5rem}.mismatch{background:#ffd9d9;font-weight:bold}.ok{background:#e2f5e4}\
.held{color:#8a4b00;font-weight:bold}.mine{color:#0a6b2d;font-weight:bold}\
button{font-size:1rem;padding:.45rem .9rem;margin-right:.5rem}a{color:#0b4fa0}kbd{border:1px solid #99a;border-radius:3px;padding:0 .3rem;background:#fff;font-size:.85em}\
.cols{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1rem;align-items:start}\
.viewer{position:sticky;top:.5rem;background:#fff;border:1px solid #ccd;padding:.5rem}\
.viewer .frame{overflow:auto;height:75vh;background:#333;display:flex;align-items:safe center;justify-content:safe center}\
.viewer img{width:100%;flex-shrink:0;transform-origin:center center;transition:transform .1s}\
.tools button{font-size:.9rem;padding:.25rem .6rem}.bar{display:flex;gap:1rem;align-items:center;flex-wrap:wrap}\
.filters{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end;margin:.5rem 0}.filters input[type=search]{min-width:18rem;font-size:1rem;padding:.35rem}\
.pager{margin:.5rem 0}.keys{color:#444;font-size:.9rem}\
@media (max-width:60rem){.cols{grid-template-columns:1fr}.viewer{position:static}}";

fn page(title: &str, me: &str, body_attrs: &str, body: &str) -> String {
    let who = if me.is_empty() {
        String::new()
    } else {
        format!(
            "<span>{me} ・ 時刻は日本時間 <form method=\"post\" action=\"/review/logout\"><button>ログアウト</button></form></span>",
            me = esc(me)
        )
    };
    format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} — 審査コンソール</title><style>{STYLE}</style><link rel=\"icon\" href=\"/review/favicon.svg\"><script src=\"/review/console.js\" defer></script></head>\
         <body{body_attrs}><header><strong><a href=\"/review\" style=\"text-decoration:none\">kyufu 審査コンソール</a></strong>{who}</header><main>{body}</main></body></html>",
        t = esc(title),
    )
}

/// A page with one message (errors, refusals).
pub fn message(me: &str, title: &str, body_html: &str) -> String {
    page(title, me, "", &format!("<h1>{}</h1><p class=\"warn\">{body_html}</p><p><a href=\"/review\">一覧へ</a></p>", esc(title)))
}

pub fn login(next: &str, msg: Option<&str>) -> String {
    let msg = msg.map(|m| format!("<p class=\"warn\" role=\"alert\">{m}</p>")).unwrap_or_default();
    page(
        "ログイン",
        "",
        "",
        &format!(
            "<h1>ログイン</h1>{msg}<form method=\"post\" action=\"/review/login\">\
             <input type=\"hidden\" name=\"next\" value=\"{next}\">\
             <p><label>名前 (Name)<br><input name=\"name\" autocomplete=\"username\" required autofocus></label></p>\
             <p><label>パスワード (Password)<br><input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
             <p><button>ログイン</button></p></form>",
            next = esc(next)
        ),
    )
}

fn reasons_list(reasons: &[ReasonCode]) -> String {
    reasons.iter().map(|r| format!("<li><code>{}</code> {}</li>", r.as_str(), esc(r.explain().0))).collect::<Vec<_>>().join("")
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    if secs >= 86_400 {
        format!("{} 日 {} 時間", secs / 86_400, (secs % 86_400) / 3600)
    } else if secs >= 3600 {
        format!("{} 時間 {} 分", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{} 分", secs / 60)
    }
}

fn lease_text(me: &str, lease: Option<&Lease>) -> String {
    match lease {
        Some(l) if l.holder == me => format!("<span class=\"mine\">あなた（{} まで）</span>", jst_time(l.until)),
        Some(l) => format!("<span class=\"held\">{} さんが担当（{} まで）</span>", esc(&l.holder), jst_time(l.until)),
        None => "—".to_owned(),
    }
}

const NEXT_FORM: &str = "<form method=\"post\" action=\"/review/next\" id=\"next-form\" style=\"display:inline\"><button>次の案件を担当する <kbd>n</kbd></button></form>";

fn list_href(status: Option<Status>, q: &str, page: usize) -> String {
    let s = status.map_or("all", Status::as_str);
    format!("/review?status={s}&amp;q={}&amp;page={page}", esc(&crate::urlencode(q)))
}

pub fn queue(me: &str, l: &Listing, none_left: bool, now: DateTime<Utc>) -> String {
    let count = |s: Status| l.counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
    let mut body = format!(
        "<div class=\"bar\"><h1>審査待ち {} 件</h1>{NEXT_FORM}</div><p>受付 {} ・ 承認 {} ・ クーポン発行 {} ・ 重複 {} ・ 却下 {}</p>",
        count(Status::NeedsReview),
        count(Status::Received),
        count(Status::Approved),
        count(Status::CouponIssued),
        count(Status::Duplicate),
        count(Status::Rejected),
    );
    if none_left {
        body.push_str("<p class=\"warn\" role=\"status\">ほかの審査者が担当していない審査待ちの案件はありません。</p>");
    }
    let mut options = String::from("<option value=\"all\">すべて</option>");
    for s in Status::ALL {
        let sel = if l.status == Some(*s) { " selected" } else { "" };
        options.push_str(&format!("<option value=\"{}\"{sel}>{}</option>", s.as_str(), status_ja(*s)));
    }
    if l.status.is_none() {
        options = options.replacen("value=\"all\"", "value=\"all\" selected", 1);
    }
    body.push_str(&format!(
        "<form method=\"get\" action=\"/review\" class=\"filters\" role=\"search\">\
         <label>状態<br><select name=\"status\">{options}</select></label>\
         <label>検索（申請番号・フリガナ・電話・メール）<br><input type=\"search\" name=\"q\" id=\"q\" value=\"{q}\" placeholder=\"例: ヤマダ タロウ / 090-1234-5678\"></label>\
         <button>絞り込む</button></form>\
         <p class=\"keys\"><kbd>n</kbd> 次の案件 ・ <kbd>/</kbd> 検索</p>",
        q = esc(&l.q)
    ));
    if l.rows.is_empty() {
        body.push_str("<p>該当する申請はありません。</p>");
    } else {
        body.push_str(&format!(
            "<p>{} 件中 {}–{} 件目</p><table><tr><th>申請番号</th><th>状態</th><th>保護者（フリガナ）</th><th>受付</th><th>待ち時間</th><th>理由</th><th>担当</th></tr>",
            l.total,
            (l.page - 1) * PAGE_SIZE + 1,
            (l.page - 1) * PAGE_SIZE + l.rows.len()
        ));
        for row in &l.rows {
            let r = &row.record;
            let name = row.event.as_ref().map_or("—".to_owned(), |e| {
                esc(&format!("{} {}", e.application.guardian.family_name_kana, e.application.guardian.given_name_kana))
            });
            body.push_str(&format!(
                "<tr data-case=\"{id}\"><td><a href=\"/review/cases/{id}\">{short}</a></td><td>{st}</td><td>{name}</td><td>{at}</td><td>{age}</td><td><ul>{reasons}</ul></td><td>{lease}</td></tr>",
                id = r.application_id,
                short = &r.application_id.to_string()[..8],
                st = status_ja(r.status),
                at = jst_datetime(r.created_at),
                age = age(now, r.created_at),
                reasons = reasons_list(&r.reasons),
                lease = lease_text(me, row.lease.as_ref()),
            ));
        }
        body.push_str("</table>");
    }
    if l.pages > 1 {
        body.push_str("<nav class=\"pager\" aria-label=\"ページ\">");
        if l.page > 1 {
            body.push_str(&format!("<a href=\"{}\" rel=\"prev\">← 前へ</a> ", list_href(l.status, &l.q, l.page - 1)));
        }
        body.push_str(&format!("{} / {} ページ", l.page, l.pages));
        if l.page < l.pages {
            body.push_str(&format!(" <a href=\"{}\" rel=\"next\">次へ →</a>", list_href(l.status, &l.q, l.page + 1)));
        }
        body.push_str("</nav>");
    }
    page("審査待ち一覧", me, " data-page=\"queue\"", &body)
}

/// A person of the application, as the registry is compared with.
struct Person<'a> {
    role: &'static str,
    resident_id: Option<&'a str>,
    family_kana: &'a str,
    given_kana: &'a str,
    birth: NaiveDate,
}

impl Person<'_> {
    fn kana_matches(&self, r: &Resident) -> bool {
        kana_key(&r.family_name_kana) == kana_key(self.family_kana) && kana_key(&r.given_name_kana) == kana_key(self.given_kana)
    }

    /// How closely a resident is this person: by resident id, else by kana name and birth date,
    /// else by kana name alone, else by birth date and family name (a mistyped given name); 0
    /// when not at all.
    fn closeness(&self, r: &Resident) -> u8 {
        let family = kana_key(&r.family_name_kana) == kana_key(self.family_kana);
        if self.resident_id.is_some_and(|id| id == r.resident_id) {
            4
        } else if self.kana_matches(r) && r.birth_date == self.birth {
            3
        } else if self.kana_matches(r) {
            2
        } else if family && r.birth_date == self.birth {
            1
        } else {
            0
        }
    }
}

fn people(a: &Application) -> [Person<'_>; 2] {
    [
        Person {
            role: "保護者",
            resident_id: a.guardian.resident_id.as_deref(),
            family_kana: &a.guardian.family_name_kana,
            given_kana: &a.guardian.given_name_kana,
            birth: a.guardian.birth_date,
        },
        Person {
            role: "対象者",
            resident_id: a.child.resident_id.as_deref(),
            family_kana: &a.child.family_name_kana,
            given_kana: &a.child.given_name_kana,
            birth: a.child.birth_date,
        },
    ]
}

/// A compared cell: green when it agrees with the application, red (and marked ✗) when not,
/// plain when the row is compared with nobody.
fn cell(compared: bool, ok: bool, text: &str) -> String {
    match (compared, ok) {
        (false, _) => format!("<td>{text}</td>"),
        (true, true) => format!("<td class=\"ok\" title=\"一致\">{text}</td>"),
        (true, false) => format!("<td class=\"mismatch\" title=\"不一致\">{text} ✗</td>"),
    }
}

/// Registry residents, each compared field by field with the person of the application it
/// stands for: `with(resident)` names that person, or nobody.
fn resident_rows<'p>(title: &str, found: &[&Resident], with: impl Fn(&Resident) -> Option<&'p Person<'p>>, postal: &str) -> String {
    let mut out = format!("<h3>{}</h3>", esc(title));
    if found.is_empty() {
        out.push_str("<p class=\"warn\">住民記録に該当する方が見つかりません。</p>");
        return out;
    }
    out.push_str("<table><tr><th>照合</th><th>住民番号</th><th>世帯</th><th>氏名</th><th>フリガナ</th><th>生年月日</th><th>郵便番号</th><th>続柄</th></tr>");
    for r in found {
        let p = with(r);
        let compared = p.is_some();
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td>{}{}{}<td>{}</td></tr>",
            p.map_or("—", |p| p.role),
            esc(&r.resident_id),
            esc(&r.household_id),
            esc(&r.family_name),
            esc(&r.given_name),
            cell(compared, p.is_some_and(|p| p.kana_matches(r)), &format!("{} {}", esc(&r.family_name_kana), esc(&r.given_name_kana))),
            cell(compared, p.is_some_and(|p| p.birth == r.birth_date), &r.birth_date.to_string()),
            cell(compared, r.postal_code == postal, &esc(&r.postal_code)),
            r.relationship.as_str(),
        ));
    }
    out.push_str("</table>");
    out
}

/// Registry residents worth comparing with a person's details: by id, then by kana and birth date.
fn candidates<'a>(registry: &'a Registry, p: &Person<'_>) -> Vec<&'a Resident> {
    let mut out: Vec<&Resident> = p.resident_id.and_then(|id| registry.by_id(id)).into_iter().collect();
    for r in registry.find_by_kana_and_birth(p.family_kana, p.given_kana, p.birth) {
        if !out.iter().any(|o| o.resident_id == r.resident_id) {
            out.push(r);
        }
    }
    out.truncate(10);
    out
}

fn comparison(registry: &Registry, a: &Application) -> String {
    let [guardian, child] = people(a);
    let postal = a.guardian.postal_code.as_str();
    let mut out = String::from("<h2>住民記録との照合</h2>");
    let g = candidates(registry, &guardian);
    out.push_str(&resident_rows("保護者の候補", &g, |_| Some(&guardian), postal));
    let c = candidates(registry, &child);
    out.push_str(&resident_rows("対象者の候補", &c, |_| Some(&child), postal));
    // The household of whoever was found, so a guardian with a mistyped name can be spotted. Each
    // member is compared with the person of the application it is closest to, if any.
    if let Some(found) = g.first().or(c.first()) {
        let members: Vec<&Resident> = registry.household(&found.household_id).iter().collect();
        let both = [&guardian, &child];
        let with = |r: &Resident| both.iter().copied().filter(|p| p.closeness(r) > 0).max_by_key(|p| p.closeness(r));
        out.push_str(&resident_rows("世帯の構成員", &members, with, postal));
    }
    out
}

fn application_table(a: &Application) -> String {
    let row = |role: &str, names: [&str; 4], birth: NaiveDate, resident_id: Option<&str>| {
        let [f, g, fk, gk] = names.map(esc);
        format!("<tr><th>{role}</th><td>{f} {g}</td><td>{fk} {gk}</td><td>{birth}</td><td>{}</td></tr>", esc(resident_id.unwrap_or("—")))
    };
    let (g, c) = (&a.guardian, &a.child);
    format!(
        "<h2>申請内容</h2><table><tr><th></th><th>氏名</th><th>フリガナ</th><th>生年月日</th><th>住民番号</th></tr>{}{}</table>\
         <p>郵便番号 {} ・ 電話 {} ・ メール {} ・ 種別 {}</p>",
        row("保護者", [&g.family_name, &g.given_name, &g.family_name_kana, &g.given_name_kana], g.birth_date, g.resident_id.as_deref()),
        row("対象者", [&c.family_name, &c.given_name, &c.family_name_kana, &c.given_name_kana], c.birth_date, c.resident_id.as_deref()),
        esc(&a.guardian.postal_code),
        esc(&a.guardian.phone),
        esc(&a.guardian.email),
        match (a.kind, a.expected_delivery_date) {
            (kyufu_domain::BeneficiaryKind::ExpectantMother, Some(due)) => format!("妊娠中の方（出産予定日 {due}）"),
            (kyufu_domain::BeneficiaryKind::ExpectantMother, None) => "妊娠中の方".to_owned(),
            (kyufu_domain::BeneficiaryKind::Child, _) => "お子さん".to_owned(),
        },
    )
}

fn viewer(record: &ApplicationRecord, ev: &ApplicationEvent) -> String {
    let doc_url = format!("/review/cases/{}/document", record.application_id);
    if ev.document.content_type.starts_with("image/") {
        format!(
            "<section class=\"viewer\" aria-label=\"本人確認書類\"><div class=\"tools bar\"><strong>本人確認書類</strong>\
             <button type=\"button\" id=\"zoom-out\">縮小</button><button type=\"button\" id=\"zoom-in\">拡大 <kbd>z</kbd></button>\
             <button type=\"button\" id=\"rotate\">回転 <kbd>x</kbd></button><span id=\"zoom-level\">100%</span></div>\
             <div class=\"frame\"><img id=\"doc\" src=\"{doc_url}\" alt=\"本人確認書類\"></div></section>"
        )
    } else {
        format!(
            "<section class=\"viewer\" aria-label=\"本人確認書類\"><p><strong>本人確認書類 (PDF)</strong> <a href=\"{doc_url}\" target=\"_blank\" rel=\"noopener\">別のタブで開く</a></p>\
             <div class=\"frame\"><iframe src=\"{doc_url}\" title=\"本人確認書類\" style=\"width:100%;height:100%;border:0;background:#fff\"></iframe></div></section>"
        )
    }
}

fn history(record: &ApplicationRecord) -> String {
    let mut out = String::from("<h2>履歴</h2><table><tr><th>日時（日本時間）</th><th>状態</th><th>担当</th><th>理由</th></tr>");
    for h in &record.history {
        // Rejection is final, so the record's reasons are those the reviewer gave.
        let why = if h.status == Status::Rejected {
            record.reasons.iter().filter(|r| **r != ReasonCode::RejectedByReviewer).map(|r| reason_label(*r)).collect::<Vec<_>>().join("、")
        } else {
            String::new()
        };
        let actor = h.actor.strip_prefix("reviewer:").map_or_else(|| esc(&h.actor), |n| format!("審査者 {}", esc(n)));
        out.push_str(&format!("<tr><td>{}</td><td>{}</td><td>{actor}</td><td>{why}</td></tr>", jst_datetime(h.at), status_ja(h.status)));
    }
    out.push_str("</table>");
    out
}

const REJECT_REASONS: &[(&str, &str)] = &[
    ("child_not_in_registry", "住民記録に該当なし"),
    ("not_same_household", "同一世帯でない"),
    ("child_over_age_limit", "対象年齢外"),
    ("duplicate_application", "重複申請"),
    ("document_unreadable", "書類が確認できない"),
];

/// A reject reason as reviewers name it, with its code.
fn reason_label(r: ReasonCode) -> String {
    let label = REJECT_REASONS.iter().find(|(v, _)| *v == r.as_str()).map_or_else(|| esc(r.explain().0), |(_, t)| (*t).to_owned());
    format!("{label} (<code>{}</code>)", r.as_str())
}

fn decision_forms(id: uuid::Uuid) -> String {
    let options: String = REJECT_REASONS.iter().map(|(v, t)| format!("<option value=\"{v}\">{t}</option>")).collect();
    format!(
        "<h2>判定</h2><div class=\"bar\"><form method=\"post\" action=\"/review/cases/{id}/decision\" id=\"approve-form\">\
         <input type=\"hidden\" name=\"decision\" value=\"approve\"><input type=\"hidden\" name=\"then\" value=\"next\"><button>承認する <kbd>a</kbd></button></form>\
         <form method=\"post\" action=\"/review/cases/{id}/decision\" id=\"reject-form\"><input type=\"hidden\" name=\"decision\" value=\"reject\">\
         <input type=\"hidden\" name=\"then\" value=\"next\"><label>却下理由 <kbd>r</kbd> <select name=\"reason\" id=\"reason\">{options}</select></label> \
         <button>却下する</button></form></div><p class=\"keys\">判定のあとは次の案件が開きます。</p>"
    )
}

pub fn case(me: &str, record: &ApplicationRecord, event: Option<&ApplicationEvent>, registry: &Registry, lease: Option<&Lease>) -> String {
    let id = record.application_id;
    let pending = record.status == Status::NeedsReview;
    let holding = lease.is_some_and(|l| l.holder == me);
    let held_by_other = lease.filter(|l| l.holder != me);
    let mut side = format!(
        "<div class=\"bar\"><h1>申請 {short}</h1><span>状態: <strong>{status}</strong> ・ 受付 {at}</span></div>",
        short = &id.to_string()[..8],
        status = status_ja(record.status),
        at = jst_datetime(record.created_at),
    );
    if pending {
        side.push_str("<p id=\"lease\" role=\"status\">");
        match (holding, held_by_other) {
            (true, _) => side.push_str(&format!(
                "<span class=\"mine\">あなたが担当しています（{} まで。開いている間は自動で延長）</span>",
                lease.map(|l| jst_time(l.until)).unwrap_or_default()
            )),
            (false, Some(l)) => side.push_str(&format!(
                "<span class=\"held\">{} さんが担当しています（{} まで）。判定はできません。</span>",
                esc(&l.holder),
                jst_time(l.until)
            )),
            (false, None) => side.push_str(&format!(
                "未担当です。<form method=\"post\" action=\"/review/cases/{id}/take\" style=\"display:inline\"><button>この案件を担当する</button></form>"
            )),
        }
        side.push_str("</p>");
    }
    side.push_str(&format!("<p class=\"keys\"><a href=\"/review\">← 一覧へ</a> ・ {NEXT_FORM}</p><p class=\"keys\">キー: <kbd>n</kbd> 次の案件 <kbd>a</kbd> 承認 <kbd>r</kbd> 却下理由へ（<kbd>Enter</kbd> で却下） <kbd>z</kbd> 拡大 <kbd>x</kbd> 回転 <kbd>Esc</kbd> 一覧へ</p>"));
    if pending && held_by_other.is_none() {
        side.push_str(&decision_forms(id));
    }
    side.push_str(&format!("<h2>理由</h2><ul>{}</ul>", reasons_list(&record.reasons)));
    if let Some(first) = record.duplicate_of {
        side.push_str(&format!("<p class=\"warn\">似ている申請: <a href=\"/review/cases/{first}\">{first}</a></p>"));
    }
    let viewer_html = match event {
        Some(ev) => {
            side.push_str(&application_table(&ev.application));
            side.push_str(&comparison(registry, &ev.application));
            viewer(record, ev)
        }
        None => {
            side.push_str("<p class=\"warn\">申請内容が見つかりません。</p>");
            String::from("<section class=\"viewer\"><p>書類がありません。</p></section>")
        }
    };
    side.push_str(&history(record));
    let attrs = format!(
        " data-page=\"case\" data-case=\"{id}\" data-holding=\"{}\" data-renew=\"{RENEW_SECS}\" data-lease=\"{LEASE_SECS}\"",
        u8::from(pending && holding)
    );
    page("申請の審査", me, &attrs, &format!("<div class=\"cols\">{viewer_html}<div>{side}</div></div>"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use kyufu_ports::events::DocumentRef;
    use kyufu_registry::{generate, GeneratorConfig};
    use uuid::Uuid;

    /// The row of the household table that shows `resident_id`.
    fn household_row<'a>(page: &'a str, resident_id: &str) -> &'a str {
        let table = &page[page.find("世帯の構成員").expect("household table")..];
        let table = &table[..table.find("</table>").expect("end of table")];
        let at = table.find(&format!("<td>{resident_id}</td>")).expect("the resident's row");
        let row = &table[table[..at].rfind("<tr").expect("row start")..];
        &row[..row.find("</tr>").expect("row end")]
    }

    #[test]
    fn the_household_table_marks_the_applied_for_child_as_matching() {
        let reference = NaiveDate::from_ymd_opt(2026, 4, 1).expect("date");
        let registry = generate(&GeneratorConfig { seed: 7, households: 50, reference_date: reference, ..GeneratorConfig::default() });
        let h = registry.households_with_children(reference, 18).into_iter().next().expect("a household with a child");
        let (guardian, child) = (h.guardian, h.children[0]);
        let application = kyufu_pipeline::synthetic::application_for(guardian, child);
        let id = Uuid::new_v4();
        let record = ApplicationRecord::received(id, "p", Utc::now());
        let event = ApplicationEvent {
            v: 1,
            application_id: id,
            program_id: "p".into(),
            identity_key: "k".into(),
            received_at: Utc::now(),
            application,
            document: DocumentRef { key: "d".into(), content_type: "image/png".into(), size: 1, sha256: "0".repeat(64) },
        };
        let page = case("alice", &record, Some(&event), &registry, None);
        for person in [guardian, child] {
            let row = household_row(&page, &person.resident_id);
            assert!(!row.contains("mismatch"), "{} matches the application exactly, yet: {row}", person.resident_id);
            assert_eq!(row.matches("class=\"ok\"").count(), 3, "kana, birth date and postal code agree: {row}");
        }
        // A mistyped given name of the child: its kana cell, and only that, is marked.
        let mut typo = event.clone();
        typo.application.child.given_name_kana = "マチガイ".into();
        let page = case("alice", &record, Some(&typo), &registry, None);
        let row = household_row(&page, &child.resident_id);
        assert_eq!(row.matches("class=\"mismatch\"").count(), 1, "{row}");
        assert!(row.contains(&format!("{} ✗", esc(&child.given_name_kana))), "the kana cell: {row}");
    }
}
