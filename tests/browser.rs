//! The web page in a real browser: headless Chromium loads `matdiff serve`'s
//! page, the seed network is typed in, the answers are typeset, the layout
//! flips, the steps open, and a syntax error is located. Without Chromium the
//! test is skipped, unless `MATDIFF_REQUIRE_BROWSER=1` (as in CI).

use crate::serve::{Server, SEED};
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The system's Chromium: `MATDIFF_CHROMIUM`, else the first on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MATDIFF_CHROMIUM") {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Evaluates JavaScript in the page until it returns a string that
/// satisfies `done`, or panics after `timeout`.
fn wait_for(tab: &Tab, js: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        if let Ok(r) = tab.evaluate(js, false) {
            last = r.value.and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
            if done(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting on `{js}`; last value: {last:?}");
}

/// The TeX source of the answer to `query`, as KaTeX rendered it (its
/// MathML annotation), or "" while there is none.
fn typeset(query: &str) -> String {
    format!(
        r##"(() => {{
            const card = [...document.querySelectorAll("#answers .answer")].find(c => c.dataset.query === {query:?});
            const tex = card && card.querySelector(":scope > .math .katex annotation");
            return tex ? tex.textContent : "";
        }})()"##
    )
}

#[test]
fn browser_page_typesets_flips_layout_shows_steps_and_locates_errors() {
    let Some(chromium) = chromium() else {
        if std::env::var("MATDIFF_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("no Chromium found, and MATDIFF_REQUIRE_BROWSER=1 (apt-get install chromium; .ci/setup does)");
        }
        eprintln!("skipped: no Chromium found (apt-get install chromium, or set MATDIFF_CHROMIUM)");
        return;
    };
    let started = Instant::now();
    let server = Server::start(&[]);
    let options = LaunchOptions::default_builder()
        .path(Some(chromium))
        .sandbox(false)
        .window_size(Some((1400, 1000)))
        .idle_browser_timeout(Duration::from_secs(120))
        .build()
        .expect("launch options");
    let browser = Browser::new(options).expect("Chromium starts");
    let tab = browser.new_tab().expect("a tab");
    tab.set_default_timeout(Duration::from_secs(30));
    tab.navigate_to(&server.url).unwrap().wait_until_navigated().unwrap();
    let wait = Duration::from_secs(30);
    // The page opens on the seed network; empty it, and type it in.
    wait_for(&tab, r#"document.getElementById("script").value"#, wait, |v| v == SEED);
    tab.evaluate(r#"document.getElementById("script").value = ""; document.getElementById("script").focus()"#, false)
        .unwrap();
    // Line by line, as text is typed or pasted, each line an input event.
    for line in SEED.lines() {
        tab.send_character(line).unwrap();
        tab.press_key("Enter").unwrap();
    }
    eprintln!("browser test: typed after {:.1} s", started.elapsed().as_secs_f64());
    let tex = wait_for(&tab, &typeset("∂L/∂W1"), wait, |t| !t.is_empty());
    eprintln!("browser test: typeset after {:.1} s", started.elapsed().as_secs_f64());
    assert!(tex.contains(r"\frac{\partial L}{\partial \mathbf{W}_{1}}"), "{tex}");
    assert!(tex.contains(r"2 \, \mathbf{n}_{0}^\top"), "{tex}");
    assert!(tex.contains(r"\odot f_{1}'\left(\mathbf{d}_{1}\right)"), "{tex}");
    // Checked against finite differences.
    let badge = wait_for(
        &tab,
        r#"document.querySelector('#answers .answer[data-query="∂L/∂W1"] .badge').textContent"#,
        wait,
        |b| !b.is_empty(),
    );
    assert!(badge.starts_with("✓ checked"), "{badge}");
    // The layout flips the Jacobian: a row instead of a column.
    let denominator = wait_for(&tab, &typeset("∂L/∂n2ᵀ"), wait, |t| !t.is_empty());
    assert!(denominator.ends_with(r"\right)^\top"), "{denominator}");
    tab.find_element(r#"input[name="layout"][value="numerator"] + span"#).unwrap().click().unwrap();
    let numerator = wait_for(&tab, &typeset("∂L/∂n2ᵀ"), wait, |t| !t.is_empty() && t != denominator);
    assert!(numerator.ends_with(r"\right)"), "{numerator}");
    let link = tab.get_url();
    assert!(link.contains("layout=numerator"), "the settings are in the link");
    // The steps open, each line with its rule.
    let summary = r#"#answers .answer[data-query="∂L/∂W1"] details.steps summary"#;
    tab.find_element(summary).unwrap().click().unwrap();
    let rules = wait_for(
        &tab,
        r#"(() => { const d = document.querySelector('#answers .answer[data-query="∂L/∂W1"] details.steps');
            return d && d.open ? [...d.querySelectorAll(".rule")].map(r => r.textContent).join("\n") : ""; })()"#,
        wait,
        |r| !r.is_empty(),
    );
    assert!(rules.starts_with("differential"), "{rules}");
    assert!(rules.contains("chain rule"), "{rules}");
    assert!(rules.lines().last().unwrap().starts_with("reshape vec⁻¹(∂L/∂vec(W1)ᵀ)"), "{rules}");
    // The examples menu loads a script; a picture of the page.
    tab.evaluate(
        r#"(() => { const m = document.getElementById("examples"); m.value = "least_squares"; m.dispatchEvent(new Event("change")); })()"#,
        false,
    )
    .unwrap();
    tab.find_element(r#"input[name="layout"][value="denominator"] + span"#).unwrap().click().unwrap();
    wait_for(&tab, &typeset("∂L/∂A"), wait, |t| !t.is_empty());
    tab.find_element(r#"#answers .answer[data-query="∂L/∂A"] details.steps summary"#).unwrap().click().unwrap();
    tab.find_element(r#"#answers .answer[data-query="∂L/∂A"] details.code-box summary"#).unwrap().click().unwrap();
    let settled = r#"(() => { const a = document.getElementById("answers");
        return !a.classList.contains("stale") && document.getElementById("status").className === "ok"
            && document.fonts.status === "loaded" && a.querySelector('[data-query="∂L/∂A"] details.code-box[open]')
            ? "settled" : ""; })()"#;
    wait_for(&tab, settled, wait, |s| !s.is_empty());
    tab.evaluate("window.scrollTo(0, 0)", false).unwrap();
    let png = tab.capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    // `MATDIFF_SCREENSHOT=docs/serve.png` renews the README's picture.
    if let Some(path) = std::env::var_os("MATDIFF_SCREENSHOT") {
        std::fs::write(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path), png).unwrap();
    }
    // The link brings back the seed network, in the numerator layout.
    tab.navigate_to("about:blank").unwrap().wait_until_navigated().unwrap();
    tab.navigate_to(&link).unwrap().wait_until_navigated().unwrap();
    assert_eq!(wait_for(&tab, &typeset("∂L/∂n2ᵀ"), wait, |t| !t.is_empty()), numerator);
    // A syntax error, typed at the end: located at its line and column.
    tab.evaluate(
        r#"(() => { const s = document.getElementById("script"); s.focus(); s.setSelectionRange(s.value.length, s.value.length); })()"#,
        false,
    )
    .unwrap();
    tab.send_character("z = (n2 - y").unwrap();
    let error = wait_for(
        &tab,
        r#"document.getElementById("error").hidden ? "" : document.getElementById("error").textContent"#,
        wait,
        |e| !e.is_empty(),
    );
    let line = SEED.lines().count() + 1;
    assert!(error.starts_with(&format!("line {line}, column 5: syntax error")), "{error}");
    let mark = wait_for(&tab, r##"(document.querySelector("#highlights mark") || {}).textContent || """##, wait, |m| {
        !m.is_empty()
    });
    assert_eq!(mark, "(");
    eprintln!("browser test: {:.1} s", started.elapsed().as_secs_f64());
}
