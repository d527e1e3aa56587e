//! Server-rendered pages of the console (Japanese, plain HTML, no scripts). Everything shown is
//! escaped; nothing here is reachable without a reviewer login.

use chrono::{DateTime, Utc};
use kyufu_domain::normalize::kana_key;
use kyufu_domain::{ReasonCode, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::ApplicationRecord;
use kyufu_registry::{Registry, Resident};

pub use kyufu_http::html_escape as esc;

fn page(title: &str, me: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} — 審査コンソール</title><style>\
         body{{font-family:system-ui,'Noto Sans JP',sans-serif;margin:0;color:#1a1a1a;background:#f6f7f9}}\
         header{{background:#123a6b;color:#fff;padding:.6rem 1rem;display:flex;justify-content:space-between}}\
         main{{padding:1rem;max-width:72rem;margin:auto}}table{{border-collapse:collapse;width:100%;background:#fff}}\
         th,td{{border:1px solid #ccd;padding:.4rem .5rem;text-align:left;vertical-align:top}}th{{background:#e8ecf3}}\
         .warn{{background:#fff4d6;border:1px solid #e0b400;padding:.5rem}}.mismatch{{background:#ffe3e3}}\
         button{{font-size:1rem;padding:.5rem 1rem;margin-right:.5rem}}a{{color:#0b4fa0}}\
         </style></head><body><header><strong>kyufu 審査コンソール</strong><span>{me}</span></header><main>{body}</main></body></html>",
        t = esc(title),
        me = esc(me),
    )
}

fn reasons_list(reasons: &[ReasonCode]) -> String {
    reasons
        .iter()
        .map(|r| format!("<li><code>{}</code> {}</li>", r.as_str(), esc(r.explain().0)))
        .collect::<Vec<_>>()
        .join("")
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

pub fn queue(me: &str, records: &[ApplicationRecord], counts: &[(Status, u64)], now: DateTime<Utc>) -> String {
    let count = |s: Status| counts.iter().find(|(x, _)| *x == s).map_or(0, |(_, n)| *n);
    let mut body = format!(
        "<h1>審査待ち {} 件</h1><p>受付 {} ・ 承認 {} ・ クーポン発行 {} ・ 重複 {} ・ 却下 {}</p>",
        count(Status::NeedsReview),
        count(Status::Received),
        count(Status::Approved),
        count(Status::CouponIssued),
        count(Status::Duplicate),
        count(Status::Rejected),
    );
    if records.is_empty() {
        body.push_str("<p>審査待ちの申請はありません。</p>");
    } else {
        body.push_str("<table><tr><th>申請番号</th><th>受付</th><th>待ち時間</th><th>理由</th></tr>");
        for r in records {
            body.push_str(&format!(
                "<tr><td><a href=\"/review/cases/{id}\">{short}</a></td><td>{at}</td><td>{age}</td><td><ul>{reasons}</ul></td></tr>",
                id = r.application_id,
                short = &r.application_id.to_string()[..8],
                at = r.created_at.format("%Y-%m-%d %H:%M"),
                age = age(now, r.created_at),
                reasons = reasons_list(&r.reasons),
            ));
        }
        body.push_str("</table>");
    }
    page("審査待ち一覧", me, &body)
}

fn resident_rows(title: &str, found: &[&Resident], given_family: &str, given_given: &str, given_birth: &str, postal: &str) -> String {
    let mut out = format!("<h3>{}</h3>", esc(title));
    if found.is_empty() {
        out.push_str("<p class=\"warn\">住民記録に該当する方が見つかりません。</p>");
        return out;
    }
    out.push_str("<table><tr><th>住民番号</th><th>世帯</th><th>氏名</th><th>フリガナ</th><th>生年月日</th><th>郵便番号</th><th>続柄</th></tr>");
    for r in found {
        let kana_ok = kana_key(&r.family_name_kana) == kana_key(given_family) && kana_key(&r.given_name_kana) == kana_key(given_given);
        let cls = |ok: bool| if ok { "" } else { " class=\"mismatch\"" };
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{} {}</td><td{}>{} {}</td><td{}>{}</td><td{}>{}</td><td>{}</td></tr>",
            esc(&r.resident_id),
            esc(&r.household_id),
            esc(&r.family_name),
            esc(&r.given_name),
            cls(kana_ok),
            esc(&r.family_name_kana),
            esc(&r.given_name_kana),
            cls(r.birth_date.to_string() == given_birth),
            r.birth_date,
            cls(r.postal_code == postal),
            esc(&r.postal_code),
            r.relationship.as_str(),
        ));
    }
    out.push_str("</table>");
    out
}

/// Registry residents worth comparing with a person's details: by id, then by kana and birth date,
/// then same kana name on any date (typos in dates).
fn candidates<'a>(registry: &'a Registry, rid: Option<&str>, family: &str, given: &str, birth: chrono::NaiveDate) -> Vec<&'a Resident> {
    let mut out: Vec<&Resident> = rid.and_then(|id| registry.by_id(id)).into_iter().collect();
    for r in registry.find_by_kana_and_birth(family, given, birth) {
        if !out.iter().any(|o| o.resident_id == r.resident_id) {
            out.push(r);
        }
    }
    out.truncate(10);
    out
}

pub fn case(me: &str, record: &ApplicationRecord, event: Option<&ApplicationEvent>, registry: &Registry, holder: Option<&str>) -> String {
    let mut body = format!(
        "<p><a href=\"/review\">← 一覧へ</a></p><h1>申請 {id}</h1><p>状態: <strong>{status}</strong> ・ 受付 {at}</p><h2>理由</h2><ul>{reasons}</ul>",
        id = record.application_id,
        status = record.status.as_str(),
        at = record.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        reasons = reasons_list(&record.reasons),
    );
    if let Some(first) = record.duplicate_of {
        body.push_str(&format!("<p class=\"warn\">似ている申請: <a href=\"/review/cases/{first}\">{first}</a></p>"));
    }
    if let Some(ev) = event {
        let a = &ev.application;
        body.push_str(&format!(
            "<h2>申請内容</h2><table>\
             <tr><th></th><th>氏名</th><th>フリガナ</th><th>生年月日</th><th>住民番号</th></tr>\
             <tr><th>保護者</th><td>{} {}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>\
             <tr><th>対象者</th><td>{} {}</td><td>{} {}</td><td>{}</td><td>{}</td></tr></table>\
             <p>郵便番号 {} ・ 電話 {} ・ メール {} ・ 種別 {:?}</p>",
            esc(&a.guardian.family_name),
            esc(&a.guardian.given_name),
            esc(&a.guardian.family_name_kana),
            esc(&a.guardian.given_name_kana),
            a.guardian.birth_date,
            esc(a.guardian.resident_id.as_deref().unwrap_or("—")),
            esc(&a.child.family_name),
            esc(&a.child.given_name),
            esc(&a.child.family_name_kana),
            esc(&a.child.given_name_kana),
            a.child.birth_date,
            esc(a.child.resident_id.as_deref().unwrap_or("—")),
            esc(&a.guardian.postal_code),
            esc(&a.guardian.phone),
            esc(&a.guardian.email),
            a.kind,
        ));
        body.push_str("<h2>住民記録との照合</h2>");
        let g = candidates(registry, a.guardian.resident_id.as_deref(), &a.guardian.family_name_kana, &a.guardian.given_name_kana, a.guardian.birth_date);
        body.push_str(&resident_rows("保護者の候補", &g, &a.guardian.family_name_kana, &a.guardian.given_name_kana, &a.guardian.birth_date.to_string(), &a.guardian.postal_code));
        let c = candidates(registry, a.child.resident_id.as_deref(), &a.child.family_name_kana, &a.child.given_name_kana, a.child.birth_date);
        body.push_str(&resident_rows("対象者の候補", &c, &a.child.family_name_kana, &a.child.given_name_kana, &a.child.birth_date.to_string(), &a.guardian.postal_code));
        // The household of whoever was found, so a guardian with a mistyped name can be spotted.
        if let Some(found) = g.first().or(c.first()) {
            let household = registry.household(&found.household_id);
            let members: Vec<&Resident> = household.iter().collect();
            body.push_str(&resident_rows("世帯の構成員", &members, "", "", "", &a.guardian.postal_code));
        }
        let doc_url = format!("/review/cases/{}/document", record.application_id);
        if ev.document.content_type.starts_with("image/") {
            body.push_str(&format!("<h2>本人確認書類</h2><p><img src=\"{doc_url}\" alt=\"本人確認書類\" style=\"max-width:100%;max-height:30rem\"></p>"));
        } else {
            body.push_str(&format!("<h2>本人確認書類</h2><p><a href=\"{doc_url}\">PDF を開く</a></p>"));
        }
    } else {
        body.push_str("<p class=\"warn\">申請内容が見つかりません。</p>");
    }
    body.push_str("<h2>履歴</h2><ul>");
    for h in &record.history {
        body.push_str(&format!("<li>{} {} ({})</li>", h.at.format("%Y-%m-%d %H:%M:%S"), h.status.as_str(), esc(&h.actor)));
    }
    body.push_str("</ul>");
    if record.status == Status::NeedsReview {
        match holder {
            Some(h) => body.push_str(&format!("<p class=\"warn\">{} さんが審査中です。</p>", esc(h))),
            None => body.push_str(&format!(
                "<h2>判定</h2><form method=\"post\" action=\"/review/cases/{id}/decision\">\
                 <button name=\"decision\" value=\"approve\">承認する</button></form>\
                 <form method=\"post\" action=\"/review/cases/{id}/decision\"><input type=\"hidden\" name=\"decision\" value=\"reject\">\
                 <label>却下理由 <select name=\"reason\">\
                 <option value=\"child_not_in_registry\">住民記録に該当なし</option>\
                 <option value=\"not_same_household\">同一世帯でない</option>\
                 <option value=\"child_over_age_limit\">対象年齢外</option>\
                 <option value=\"duplicate_application\">重複申請</option>\
                 <option value=\"document_unreadable\">書類が確認できない</option>\
                 </select></label> <button>却下する</button></form>",
                id = record.application_id
            )),
        }
    }
    page("申請の審査", me, &body)
}
