//! A small harness that drives a real headless Chromium (Debian's `/usr/bin/chromium`) over
//! the DevTools protocol, and runs the axe-core accessibility checker on a page.
//!
//! ```ignore
//! let Some(browser) = chrome::browser().await else { return };
//! let tab = browser.tab(360, 740, false).await; // a phone, page scripts off
//! tab.goto(&format!("{base}/rdv")).await;
//! tab.fill("#name", "Ada").await;
//! tab.click_and_wait("button[type=submit]").await;
//! assert!(tab.text().await.contains("Ada"));
//! ```
//!
//! Each `browser()` call starts its own Chromium with its own temporary profile, so tests run
//! in parallel without sharing state; dropping the last handle (`Browser` or a `Tab`) kills it.
//!
//! Chromium missing: outside CI the test is skipped with a line on stderr (`browser()` returns
//! `None`); with `CI` set it panics, since CI must never pass without the browser tests. The
//! same goes for axe-core (`tests/browser/node_modules`, installed by `npm ci` in `.ci/run`).
//!
//! Page scripts off (`javascript == false`, `Emulation.setScriptExecutionDisabled`) keeps the
//! page's own scripts from running (and so from adding listeners): what a citizen without
//! JavaScript gets. Found by experiment (the tests below use them with scripts off), all the
//! helpers still work with it, because none relies on page scripts:
//! - `goto`, `click_and_wait`, `exists`, `attr`, `html`, `url` use only DOM, Input and Page
//!   commands of the protocol, and the browser's native behaviour (links, form submission);
//! - `fill` types with Input events (select-all, Backspace, insert text) into a DOM-focused
//!   field; `check` and `press_tab_and_focused` press real keys (Space, Tab);
//! - `text`, `title`, `value`, `select`, `eval`, and the checks inside `fill` and `check`,
//!   evaluate JavaScript from the DevTools side (`Runtime.evaluate`,
//!   `Runtime.callFunctionOn`), which neither the switch nor the page's
//!   Content-Security-Policy blocks. Synchronous code and promises run there, but timers
//!   (`setTimeout`) never fire: an `eval` that waits on one times out;
//! - `axe` needs timers, so on such a tab it lifts the switch for its own run only (the page's
//!   scripts, skipped while it loaded, stay unrun): it audits the page as rendered without
//!   JavaScript.
//!
//! With scripts on, the page's listeners hear what the helpers do: typing fires the native
//! `input` events, and `select` (and `fill` on picker fields) fire `input` and `change`.
//!
//! Navigation waits never race: the load listeners are registered before the click or the
//! `Page.navigate`, and the wait matches the main frame's new document (its loader id) with its
//! `load` lifecycle event. It gives up after [`NAVIGATION_TIMEOUT`], panicking with the URL.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chromiumoxide::BrowserConfig;
use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::dom::{
    FocusParams, GetAttributesParams, GetContentQuadsParams, GetDocumentParams, GetOuterHtmlParams,
    NodeId, QuerySelectorParams, ResolveNodeParams, ScrollIntoViewIfNeededParams,
};
use chromiumoxide::cdp::browser_protocol::emulation::{
    SetDeviceMetricsOverrideParams, SetScriptExecutionDisabledParams,
};
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::browser_protocol::page::{
    EventFrameNavigated, EventLifecycleEvent, GetFrameTreeParams, NavigateParams,
};
use chromiumoxide::cdp::js_protocol::runtime::{
    CallArgument, CallFunctionOnParams, EvaluateParams, ExceptionDetails,
};
use chromiumoxide::types::Command;
use futures::StreamExt;
use serde::Deserialize;
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// How long a navigation (`goto`, `click_and_wait`) may take before the test fails.
pub const NAVIGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Viewports narrower than this are emulated as a phone (mobile: `<meta name=viewport>` is
/// honoured, and a page without one is laid out 980 px wide, as on a real phone).
const MOBILE_BELOW: u32 = 768;

/// Input types that a user fills with a picker rather than by typing: see [`Tab::fill`].
const PICKER_TYPES: [&str; 7] = [
    "date",
    "time",
    "month",
    "week",
    "datetime-local",
    "color",
    "range",
];

/// The axe rule sets run by [`Tab::axe`]: WCAG 2.0/2.1 levels A and AA plus best practices.
const AXE_TAGS: &str = "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The Chromium to start: `GUICHET_CHROMIUM`, else `/usr/bin/chromium`, else `chromium` on
/// the `PATH`. `Err` says what was looked for.
fn chromium_path() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GUICHET_CHROMIUM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "GUICHET_CHROMIUM={} does not exist",
                path.display()
            ))
        };
    }
    let debian = Path::new("/usr/bin/chromium");
    if debian.is_file() {
        return Ok(debian.to_owned());
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .ok_or_else(|| "no /usr/bin/chromium and no chromium on PATH".to_owned())
}

/// Launches a headless Chromium of its own (own temporary profile, own DevTools port), or
/// returns `None` (outside CI, with a note on stderr) if there is no Chromium. Panics if
/// Chromium is missing under CI, or is there but does not start.
pub async fn browser() -> Option<Browser> {
    let executable = match chromium_path() {
        Ok(path) => path,
        Err(why) if in_ci() => {
            panic!("CI is set but Chromium is missing ({why}): .ci/run installs it")
        }
        Err(why) => {
            eprintln!("skipping a browser test: {why} (apt-get install chromium)");
            return None;
        }
    };
    let profile = tempfile::Builder::new()
        .prefix("guichet-chromium-")
        .tempdir()
        .expect("temporary Chromium profile");
    let config = BrowserConfig::builder()
        .chrome_executable(&executable)
        // Tests may run as root, where Chromium refuses to start with its sandbox.
        .no_sandbox()
        .user_data_dir(profile.path())
        // Each tab sets its own viewport; no default 800x600 emulation in between.
        .viewport(None)
        .launch_timeout(Duration::from_secs(30))
        .request_timeout(NAVIGATION_TIMEOUT)
        // No GPU here, and the machine's network is closed: no background connections that
        // would only fail (and slow the start down).
        .args([
            "disable-gpu",
            "disable-quic",
            "disable-component-update",
            "disable-domain-reliability",
            "no-default-browser-check",
        ])
        .build()
        .expect("Chromium configuration");
    let (browser, mut handler) = chromiumoxide::Browser::launch(config)
        .await
        .unwrap_or_else(|e| panic!("Chromium ({}) did not start: {e}", executable.display()));
    // The handler drives the DevTools connection and must be polled for as long as the browser
    // is used. Its errors are not fatal (events of a newer protocol than chromiumoxide knows,
    // the socket closing when Chromium is killed): keep polling until the stream ends.
    let handler = tokio::spawn(async move { while handler.next().await.is_some() {} });
    Some(Browser {
        inner: Arc::new(Launched {
            browser,
            handler,
            profile: Some(profile),
        }),
    })
}

/// A running headless Chromium. Cheap to keep around; killed when it and all its tabs are gone.
pub struct Browser {
    inner: Arc<Launched>,
}

struct Launched {
    browser: chromiumoxide::Browser,
    handler: JoinHandle<()>,
    // Removed by `drop` below once Chromium is dead.
    profile: Option<TempDir>,
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.handler.abort();
        // chromiumoxide only asks tokio to kill Chromium on drop and reap it "later"; kill it
        // now and wait (briefly) for it, so that no Chromium outlives its test and the profile
        // directory is no longer in use when it is removed.
        if let Some(child) = self.browser.get_mut_child() {
            let child = child.as_mut_inner();
            let _ = child.start_kill();
            for _ in 0..200 {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Ok(Some(_)) | Err(_) => break,
                }
            }
        }
        // Chromium's helper processes die a moment after it and may still write into the
        // profile meanwhile, making a single removal fail (TempDir would then silently leave
        // the directory behind): retry for a while.
        if let Some(profile) = self.profile.take() {
            for _ in 0..100 {
                match std::fs::remove_dir_all(profile.path()) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

impl Browser {
    /// Opens a tab with a `width` x `height` viewport (below 768 px wide it is emulated as a
    /// phone), on `about:blank`. With `javascript == false` the page's scripts are disabled
    /// before anything is loaded.
    pub async fn tab(&self, width: u32, height: u32, javascript: bool) -> Tab {
        let page = self
            .inner
            .browser
            .new_page("about:blank")
            .await
            .expect("new Chromium tab");
        let tab = Tab {
            page,
            javascript,
            _browser: self.inner.clone(),
        };
        tab.cdp(
            "set the viewport",
            SetDeviceMetricsOverrideParams::new(
                i64::from(width),
                i64::from(height),
                1.0,
                width < MOBILE_BELOW,
            ),
        )
        .await;
        if !javascript {
            tab.cdp(
                "disable page scripts",
                SetScriptExecutionDisabledParams::new(true),
            )
            .await;
        }
        tab
    }
}

/// One tab of a [`Browser`]. Every helper panics with a readable message when the page does
/// not have what the test expects (a missing element, a navigation that does not happen).
pub struct Tab {
    page: Page,
    javascript: bool,
    // Keeps Chromium alive while the tab is in use.
    _browser: Arc<Launched>,
}

impl Tab {
    /// Whether the page's own scripts run in this tab.
    pub fn javascript(&self) -> bool {
        self.javascript
    }

    /// Navigates to `url` and waits until the new page has loaded.
    pub async fn goto(&self, url: &str) {
        self.navigation(&format!("goto {url}"), async {
            let res = self.cdp("navigate", NavigateParams::new(url)).await;
            if let Some(err) = res.error_text {
                panic!("navigating to {url} failed: {err}");
            }
        })
        .await;
    }

    /// Clears the text field (input or textarea) at `css`, then types `text` into it, as a
    /// user would (keyboard select-all and delete, then text input). Panics unless the field
    /// then holds exactly `text` (a `maxlength`, say, would cut it).
    ///
    /// Fields that take no typed text (`date`, `time`, `month`, `week`, `datetime-local`,
    /// `color`, `range`: a user fills them with a picker) get `text` as their value directly,
    /// in the format of their `value` (`2026-12-01`, `09:40`), with `input` and `change` events.
    pub async fn fill(&self, css: &str, text: &str) {
        let kind = self.attr(css, "type").await.unwrap_or_default();
        if PICKER_TYPES.contains(&kind.to_ascii_lowercase().as_str()) {
            let error = self
                .call_on(
                    css,
                    "function (value) {
                        this.value = value;
                        this.dispatchEvent(new Event('input', { bubbles: true }));
                        this.dispatchEvent(new Event('change', { bubbles: true }));
                        return this.value === value ? '' : 'the field holds ' + JSON.stringify(this.value);
                    }",
                    serde_json::json!(text),
                )
                .await;
            assert_eq!(error, "", "fill({css:?}, {text:?}): {error}");
            return;
        }
        let node = self.node(css).await;
        self.cdp(&format!("focus {css}"), focus(node)).await;
        // Ctrl+A (as the editing command, which does not depend on the keyboard layout), then
        // Backspace: clears the field, firing the same events as a user doing so.
        let mut select_all = key_event(DispatchKeyEventType::RawKeyDown, "a", "KeyA", 65);
        select_all.modifiers = Some(2); // Ctrl
        select_all.commands = Some(vec!["selectAll".to_owned()]);
        self.cdp("select all", select_all).await;
        self.key_up("a", "KeyA", 65).await;
        self.press("Backspace", "Backspace", 8).await;
        if !text.is_empty() {
            self.cdp(&format!("type into {css}"), InsertTextParams::new(text))
                .await;
        }
        let value = self.value(css).await;
        assert_eq!(
            value.as_deref(),
            Some(text),
            "after fill({css:?}), the field holds {value:?}"
        );
    }

    /// Chooses the option whose `value` is `value` in the `<select>` at `css`.
    pub async fn select(&self, css: &str, value: &str) {
        let error = self
            .call_on(
                css,
                "function (value) {
                    if (this.tagName !== 'SELECT') return 'not a <select> but a ' + this.tagName;
                    const values = Array.from(this.options, o => o.value);
                    if (!values.includes(value))
                        return 'no option ' + JSON.stringify(value) + ' among ' + JSON.stringify(values);
                    this.value = value;
                    this.dispatchEvent(new Event('input', { bubbles: true }));
                    this.dispatchEvent(new Event('change', { bubbles: true }));
                    return '';
                }",
                serde_json::json!(value),
            )
            .await;
        assert_eq!(error, "", "select({css:?}, {value:?}): {error}");
    }

    /// Checks the radio button or checkbox at `css` (a no-op if it is already checked), with
    /// the keyboard: focus, then Space. This works for inputs styled as visually hidden too.
    pub async fn check(&self, css: &str) {
        let checked = format!(
            "(e => !!(e && e.checked))(document.querySelector({}))",
            js_string(css)
        );
        if self.eval(&checked).await == serde_json::json!(true) {
            return;
        }
        let node = self.node(css).await;
        self.cdp(&format!("focus {css}"), focus(node)).await;
        let mut down = key_event(DispatchKeyEventType::KeyDown, " ", "Space", 32);
        down.text = Some(" ".to_owned());
        self.cdp("press Space", down).await;
        self.key_up(" ", "Space", 32).await;
        assert_eq!(
            self.eval(&checked).await,
            serde_json::json!(true),
            "check({css:?}): still unchecked after Space"
        );
    }

    /// Clicks the element at `css` (a submit button, a link) with the mouse and waits until the
    /// navigation it starts has loaded. Panics after [`NAVIGATION_TIMEOUT`] if none does (a
    /// click that stays on the same document never completes here).
    pub async fn click_and_wait(&self, css: &str) {
        let node = self.node(css).await;
        self.navigation(&format!("click {css}"), async {
            self.click_node(css, node).await;
        })
        .await;
    }

    /// The URL of the current page.
    pub async fn url(&self) -> String {
        self.cdp("read the frame tree", GetFrameTreeParams::default())
            .await
            .frame_tree
            .frame
            .url
    }

    /// The document's title.
    pub async fn title(&self) -> String {
        string(self.eval("document.title").await)
    }

    /// The visible text of the body (`innerText`: hidden elements left out, one line per block).
    pub async fn text(&self) -> String {
        string(
            self.eval("document.body ? document.body.innerText : ''")
                .await,
        )
    }

    /// The outer HTML of the whole document, as the DOM holds it now.
    pub async fn html(&self) -> String {
        let root = self.document().await;
        self.cdp(
            "read the HTML",
            GetOuterHtmlParams {
                node_id: Some(root),
                ..Default::default()
            },
        )
        .await
        .outer_html
    }

    /// Whether an element matches `css`.
    pub async fn exists(&self, css: &str) -> bool {
        self.query(css).await.is_some()
    }

    /// The attribute `name` of the first element matching `css` as written in the DOM (not the
    /// live property: see [`Tab::value`] for a field's current value). `None` if the element
    /// has no such attribute; panics if no element matches.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let node = self.node(css).await;
        let attributes = self
            .cdp(
                &format!("read attributes of {css}"),
                GetAttributesParams::new(node),
            )
            .await
            .attributes;
        // The protocol returns [name, value, name, value, ...].
        attributes
            .chunks(2)
            .find(|pair| pair[0].eq_ignore_ascii_case(name))
            .map(|pair| pair.get(1).cloned().unwrap_or_default())
    }

    /// The current value of the form field at `css` (its live `value` property); `None` if no
    /// element matches.
    pub async fn value(&self, css: &str) -> Option<String> {
        let js = format!(
            "(e => e ? String(e.value) : null)(document.querySelector({}))",
            js_string(css)
        );
        match self.eval(&js).await {
            serde_json::Value::String(value) => Some(value),
            _ => None,
        }
    }

    /// Presses Tab and describes the element that has the focus then: tag, id, `name`, `type`
    /// and `href`, and its accessible text (`aria-label`, else its label, else its text), e.g.
    /// `a[href="/rdv"] "Prendre rendez-vous"` or `input#name[name="name"] "Nom"`; `body` when
    /// the focus has left the page's elements.
    pub async fn press_tab_and_focused(&self) -> String {
        self.press("Tab", "Tab", 9).await;
        string(
            self.eval(
                "(e => {
                    if (!e || e === document.body) return 'body';
                    let d = e.tagName.toLowerCase();
                    if (e.id) d += '#' + e.id;
                    for (const a of ['name', 'type', 'href'])
                        if (e.hasAttribute(a)) d += '[' + a + '=' + JSON.stringify(e.getAttribute(a)) + ']';
                    const text = e.getAttribute('aria-label')
                        || (e.labels && e.labels.length ? e.labels[0].innerText : '')
                        || e.innerText
                        || (e.type === 'submit' ? e.value : '')
                        || '';
                    const short = text.trim().replace(/\\s+/g, ' ').slice(0, 80);
                    return short ? d + ' ' + JSON.stringify(short) : d;
                })(document.activeElement)",
            )
            .await,
        )
    }

    /// Runs axe-core on the current page (WCAG 2.0/2.1 A and AA, and best practices) and
    /// returns its violations, or `None` (outside CI, with a note on stderr) when axe-core is
    /// not installed (`npm ci --prefix tests/browser`); under CI that panics instead.
    ///
    /// It works with page scripts disabled too, on the page as it rendered without them:
    /// axe-core is injected from the DevTools side (which the page's Content-Security-Policy
    /// does not block either), and scripts are allowed again for the run only, since axe-core
    /// needs timers (see the comment inside).
    pub async fn axe(&self) -> Option<Vec<AxeViolation>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser/node_modules/axe-core/axe.min.js");
        let source = match std::fs::read_to_string(&path) {
            Ok(source) => source,
            Err(e) if in_ci() => panic!(
                "CI is set but axe-core is missing ({}: {e}): .ci/run runs npm ci --prefix tests/browser",
                path.display()
            ),
            Err(e) => {
                eprintln!(
                    "skipping an accessibility check: no axe-core at {} ({e}); run npm ci --prefix tests/browser",
                    path.display()
                );
                return None;
            }
        };
        if self.eval("typeof window.axe").await != serde_json::json!("object") {
            self.eval(&source).await;
        }
        let run = format!(
            "axe.run(document, {{ runOnly: {{ type: 'tag', values: {AXE_TAGS} }}, resultTypes: ['violations'] }})
                .then(r => r.violations.map(v => ({{
                    id: v.id,
                    impact: v.impact || '',
                    help: v.help,
                    helpUrl: v.helpUrl,
                    nodes: v.nodes.map(n => n.target
                        .map(t => Array.isArray(t) ? t.join(' >>> ') : t)
                        .join(' >>> ')),
                }})))"
        );
        // axe-core schedules its work with timers, and with page scripts disabled timers never
        // fire (its promise would never settle): allow scripts for the run only. The page's
        // own scripts, skipped while it loaded, do not run for that.
        if !self.javascript {
            self.cdp(
                "allow scripts for axe",
                SetScriptExecutionDisabledParams::new(false),
            )
            .await;
        }
        let violations = self.eval(&run).await;
        if !self.javascript {
            self.cdp(
                "disable page scripts again",
                SetScriptExecutionDisabledParams::new(true),
            )
            .await;
        }
        Some(
            serde_json::from_value(violations.clone())
                .unwrap_or_else(|e| panic!("unexpected axe result {violations}: {e}")),
        )
    }

    /// Evaluates a JavaScript expression from the DevTools side (it runs even with page
    /// scripts disabled) and returns its JSON value; a promise is awaited. Panics if it throws.
    pub async fn eval(&self, expression: &str) -> serde_json::Value {
        let mut params = EvaluateParams::new(expression);
        params.return_by_value = Some(true);
        params.await_promise = Some(true);
        let res = self.cdp("evaluate JavaScript", params).await;
        if let Some(exception) = res.exception_details {
            panic!(
                "JavaScript threw: {}\nin: {}",
                describe_exception(&exception),
                shorten(expression)
            );
        }
        res.result.value.unwrap_or(serde_json::Value::Null)
    }

    /// The underlying chromiumoxide page, for what the helpers do not cover.
    pub fn page(&self) -> &Page {
        &self.page
    }

    // --- internals ---

    /// Runs a protocol command, panicking with `what` and the current URL if it fails.
    async fn cdp<T: Command>(&self, what: &str, cmd: T) -> T::Response {
        match self.page.execute(cmd).await {
            Ok(res) => res.result,
            Err(e) => {
                let url = self.page.url().await.ok().flatten().unwrap_or_default();
                panic!("Chromium could not {what} (at {url}): {e}")
            }
        }
    }

    /// The document's root node. Node ids are valid for one document only, so this is asked
    /// again for every lookup — and asking invalidates every node id handed out before: use a
    /// `NodeId` before the next lookup.
    async fn document(&self) -> NodeId {
        self.cdp("read the document", GetDocumentParams::default())
            .await
            .root
            .node_id
    }

    async fn query(&self, css: &str) -> Option<NodeId> {
        let root = self.document().await;
        let node = self
            .cdp(
                &format!("query {css:?}"),
                QuerySelectorParams::new(root, css),
            )
            .await
            .node_id;
        // The protocol answers node id 0 for "no match".
        (*node.inner() != 0).then_some(node)
    }

    async fn node(&self, css: &str) -> NodeId {
        match self.query(css).await {
            Some(node) => node,
            None => panic!("no element matches {css:?} at {}", self.url().await),
        }
    }

    /// Calls `function` with `this` bound to the element at `css` and one argument, from the
    /// DevTools side; returns its result as a string.
    async fn call_on(&self, css: &str, function: &str, argument: serde_json::Value) -> String {
        let node = self.node(css).await;
        let object = self
            .cdp(
                &format!("resolve {css}"),
                ResolveNodeParams {
                    node_id: Some(node),
                    ..Default::default()
                },
            )
            .await
            .object
            .object_id
            .unwrap_or_else(|| panic!("{css:?} has no JavaScript object"));
        let mut params = CallFunctionOnParams::new(function);
        params.object_id = Some(object);
        params.arguments = Some(vec![CallArgument {
            value: Some(argument),
            ..Default::default()
        }]);
        params.return_by_value = Some(true);
        let res = self.cdp(&format!("call a function on {css}"), params).await;
        if let Some(exception) = res.exception_details {
            panic!(
                "JavaScript on {css:?} threw: {}",
                describe_exception(&exception)
            );
        }
        string(res.result.value.unwrap_or_default())
    }

    /// A left click in the middle of the element (scrolled into view first), as a mouse would.
    async fn click_node(&self, css: &str, node: NodeId) {
        self.cdp(
            &format!("scroll {css} into view"),
            ScrollIntoViewIfNeededParams {
                node_id: Some(node),
                ..Default::default()
            },
        )
        .await;
        let quads = self
            .cdp(
                &format!("locate {css}"),
                GetContentQuadsParams {
                    node_id: Some(node),
                    ..Default::default()
                },
            )
            .await
            .quads;
        let Some((x, y)) = quads.iter().find_map(|q| {
            let p = q.inner();
            // Four corners (x, y); a quad of no area is not clickable.
            let (xs, ys) = ([p[0], p[2], p[4], p[6]], [p[1], p[3], p[5], p[7]]);
            let w = xs.iter().cloned().fold(f64::MIN, f64::max)
                - xs.iter().cloned().fold(f64::MAX, f64::min);
            let h = ys.iter().cloned().fold(f64::MIN, f64::max)
                - ys.iter().cloned().fold(f64::MAX, f64::min);
            (p.len() == 8 && w >= 1.0 && h >= 1.0)
                .then(|| (xs.iter().sum::<f64>() / 4.0, ys.iter().sum::<f64>() / 4.0))
        }) else {
            panic!("{css:?} is not visible: nothing to click");
        };
        for kind in [
            DispatchMouseEventType::MouseMoved,
            DispatchMouseEventType::MousePressed,
            DispatchMouseEventType::MouseReleased,
        ] {
            let mut event = DispatchMouseEventParams::new(kind.clone(), x, y);
            if kind != DispatchMouseEventType::MouseMoved {
                event.button = Some(MouseButton::Left);
                event.buttons = Some(1);
                event.click_count = Some(1);
            }
            self.cdp(&format!("click {css}"), event).await;
        }
    }

    /// Presses and releases a key that types no text (Tab, Backspace, ...).
    async fn press(&self, key: &str, code: &str, key_code: i64) {
        self.cdp(
            &format!("press {key}"),
            key_event(DispatchKeyEventType::RawKeyDown, key, code, key_code),
        )
        .await;
        self.key_up(key, code, key_code).await;
    }

    async fn key_up(&self, key: &str, code: &str, key_code: i64) {
        self.cdp(
            &format!("release {key}"),
            key_event(DispatchKeyEventType::KeyUp, key, code, key_code),
        )
        .await;
    }

    /// Runs `action` (which starts a navigation) and waits until the main frame has committed
    /// a new document and that document has fired `load`.
    async fn navigation(&self, what: &str, action: impl Future<Output = ()>) {
        // Listen before acting, so that no event can be missed however fast the page loads.
        let mut navigated = self
            .page
            .event_listener::<EventFrameNavigated>()
            .await
            .expect("listen to navigations");
        let mut lifecycle = self
            .page
            .event_listener::<EventLifecycleEvent>()
            .await
            .expect("listen to page loads");
        action.await;
        let wait = async {
            // The two streams are not ordered with each other: remember every loaded document
            // and the newly committed one, and stop when they meet.
            let mut loaded = HashSet::new();
            let mut committed = None;
            loop {
                tokio::select! {
                    Some(event) = navigated.next() => {
                        if event.frame.parent_id.is_none() {
                            committed = Some(event.frame.loader_id.clone());
                        }
                    }
                    Some(event) = lifecycle.next() => {
                        if event.name == "load" {
                            loaded.insert(event.loader_id.clone());
                        }
                    }
                    else => panic!("Chromium went away during {what}"),
                }
                if committed.as_ref().is_some_and(|id| loaded.contains(id)) {
                    return;
                }
            }
        };
        if tokio::time::timeout(NAVIGATION_TIMEOUT, wait)
            .await
            .is_err()
        {
            panic!(
                "{what}: no page loaded within {NAVIGATION_TIMEOUT:?}; still at {}",
                self.url().await
            );
        }
    }
}

fn focus(node: NodeId) -> FocusParams {
    FocusParams {
        node_id: Some(node),
        ..Default::default()
    }
}

fn key_event(
    kind: DispatchKeyEventType,
    key: &str,
    code: &str,
    key_code: i64,
) -> DispatchKeyEventParams {
    let mut event = DispatchKeyEventParams::new(kind);
    event.key = Some(key.to_owned());
    event.code = Some(code.to_owned());
    event.windows_virtual_key_code = Some(key_code);
    event.native_virtual_key_code = Some(key_code);
    event
}

/// A Rust string as a JavaScript string literal (JSON is valid JavaScript here).
fn js_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn string(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn shorten(s: &str) -> String {
    if s.len() <= 300 {
        return s.to_owned();
    }
    let end = (0..=300)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}…", &s[..end])
}

fn describe_exception(exception: &ExceptionDetails) -> String {
    exception
        .exception
        .as_ref()
        .and_then(|e| e.description.clone())
        .unwrap_or_else(|| exception.text.clone())
}

/// One failed axe-core rule on a page.
#[derive(Debug, Clone, Deserialize)]
pub struct AxeViolation {
    /// The rule, e.g. `image-alt`, `label`, `color-contrast`.
    pub id: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    /// What the rule asks for, in one line.
    pub help: String,
    /// Where the rule is explained.
    #[serde(rename = "helpUrl")]
    pub help_url: String,
    /// The CSS selectors of the offending elements.
    pub nodes: Vec<String>,
}

/// One line: `[impact] rule: help — the first few offending elements (help URL)`.
impl fmt::Display for AxeViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A repeated defect (one per slot button, say) would otherwise bury the message.
        const SHOWN: usize = 5;
        write!(f, "[{}] {}: {} — ", self.impact, self.id, self.help)?;
        write!(
            f,
            "{}",
            self.nodes[..self.nodes.len().min(SHOWN)].join(", ")
        )?;
        if self.nodes.len() > SHOWN {
            write!(f, " and {} more", self.nodes.len() - SHOWN)?;
        }
        write!(f, " ({})", self.help_url)
    }
}

/// The violations that must fail a test: impact `serious` or `critical`.
pub fn serious(violations: &[AxeViolation]) -> Vec<&AxeViolation> {
    violations
        .iter()
        .filter(|v| v.impact == "serious" || v.impact == "critical")
        .collect()
}

/// Violations as a readable failure message, one per line.
pub fn report<'a>(violations: impl IntoIterator<Item = &'a AxeViolation>) -> String {
    violations.into_iter().map(|v| format!("  {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    //! The harness against a tiny local site: forms with and without JavaScript, the script
    //! switch, viewports, the keyboard and axe-core, including checks that must fail.

    use super::*;
    use axum::Router;
    use axum::extract::{Form, RawQuery};
    use axum::http::header;
    use axum::response::{Html, IntoResponse, Redirect};
    use axum::routing::get;

    const HEAD: &str = r#"<meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
            @media (max-width: 600px) { .wide { display: none } }
            @media (min-width: 601px) { .narrow { display: none } }
            .visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden;
                               clip: rect(0 0 0 0); white-space: nowrap; }
        </style>"#;

    fn escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }

    async fn form_page() -> impl IntoResponse {
        (
            // As strict as a real page may be: no page script may run, yet axe (injected from
            // the DevTools side) must.
            [(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
            )],
            Html(format!(
                r#"<!doctype html>
<html lang="en"><head>{HEAD}<title>Test form</title></head>
<body><main>
  <h1>Test form</h1>
  <form method="post" action="/echo">
    <p><label for="name">Name</label> <input id="name" name="name" value="prefilled" autocomplete="name"></p>
    <p><label for="kind">Kind</label>
       <select id="kind" name="kind"><option value="a">A</option><option value="b">B</option></select></p>
    <fieldset><legend>Size</legend>
      <input type="radio" id="small" name="size" value="small" checked> <label for="small">Small</label>
      <input type="radio" id="large" name="size" value="large"> <label for="large">Large</label>
    </fieldset>
    <p><input type="checkbox" id="agree" name="agree" value="yes"> <label for="agree">I agree</label></p>
    <p><input type="checkbox" id="news" name="news" value="yes" class="visually-hidden">
       <label for="news">Send me news</label></p>
    <p><button type="submit">Send</button></p>
  </form>
  <p class="narrow">narrow layout</p>
  <p class="wide">wide layout</p>
</main></body></html>"#
            )),
        )
    }

    /// Post/redirect/get, as the application does: the echo is on the page redirected to.
    async fn echo(Form(fields): Form<Vec<(String, String)>>) -> Redirect {
        let query = serde_urlencoded::to_string(&fields).expect("encode the fields");
        Redirect::to(&format!("/echoed?{query}"))
    }

    async fn echoed(RawQuery(query): RawQuery) -> Html<String> {
        let fields: Vec<(String, String)> =
            serde_urlencoded::from_str(&query.unwrap_or_default()).expect("decode the fields");
        let items: String = fields
            .iter()
            .map(|(k, v)| format!("<li>{}={}</li>", escape(k), escape(v)))
            .collect();
        Html(format!(
            r#"<!doctype html><html lang="en"><head>{HEAD}<title>Echo</title></head>
            <body><main><h1>Received</h1><ul>{items}</ul></main></body></html>"#
        ))
    }

    async fn script_page() -> Html<String> {
        Html(format!(
            r#"<!doctype html><html lang="en"><head>{HEAD}<title>original</title></head>
            <body><main><h1>Script</h1>
            <p><label for="q">Query</label> <input id="q"></p>
            <p><label for="day">Day</label> <input id="day" type="date"></p>
            <p id="mirror">nothing typed</p>
            <script>
                document.title = 'js ran';
                const mirror = () => document.getElementById('mirror').textContent =
                    'typed ' + q.value.toUpperCase() + ' on ' + day.value;
                q.addEventListener('input', mirror);
                day.addEventListener('change', mirror);
            </script></main></body></html>"#
        ))
    }

    /// Fails axe: no `lang`, an image without `alt`, a field without a label.
    async fn defective_page() -> Html<&'static str> {
        Html(
            r#"<!doctype html><html><head><title>Defective</title></head>
            <body><img src="x.png"><input type="text" name="q"></body></html>"#,
        )
    }

    /// Serves the test site on a free local port; returns its base URL.
    async fn site() -> String {
        let app = Router::new()
            .route("/form", get(form_page))
            .route("/echo", axum::routing::post(echo))
            .route("/echoed", get(echoed))
            .route("/script", get(script_page))
            .route("/defective", get(defective_page));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("test site") });
        format!("http://{addr}")
    }

    async fn form_round_trip(javascript: bool) {
        let base = site().await;
        let Some(browser) = browser().await else {
            return;
        };
        let tab = browser.tab(1280, 900, javascript).await;
        assert_eq!(tab.javascript(), javascript);
        tab.goto(&format!("{base}/form")).await;
        assert_eq!(tab.title().await, "Test form");
        // The escape hatch sees the same page.
        let url = tab.page().url().await.expect("page URL");
        assert_eq!(url.as_deref(), Some(tab.url().await.as_str()));
        assert_eq!(tab.value("#name").await.as_deref(), Some("prefilled"));
        assert_eq!(
            tab.attr("#name", "autocomplete").await.as_deref(),
            Some("name")
        );
        assert_eq!(tab.attr("#name", "placeholder").await, None);
        assert!(tab.exists("button[type=submit]").await);
        assert!(!tab.exists("#no-such-thing").await);
        assert!(tab.html().await.contains(r#"<label for="agree">"#));

        let name = "Zoé O'Brien <&> 日本";
        tab.fill("#name", name).await;
        tab.select("#kind", "b").await;
        tab.check("#large").await;
        tab.check("#agree").await;
        tab.check("#agree").await; // already checked: stays checked
        tab.check("#news").await; // visually hidden, as custom-styled boxes are
        tab.click_and_wait("button[type=submit]").await;

        assert!(
            tab.url().await.starts_with(&format!("{base}/echoed?")),
            "{}",
            tab.url().await
        );
        assert_eq!(tab.title().await, "Echo");
        let text = tab.text().await;
        for expected in [
            format!("name={name}"),
            "kind=b".to_owned(),
            "size=large".to_owned(),
            "agree=yes".to_owned(),
            "news=yes".to_owned(),
        ] {
            assert!(text.contains(&expected), "{expected:?} not in {text:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn form_round_trip_with_javascript() {
        form_round_trip(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn form_round_trip_without_javascript() {
        form_round_trip(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn disabling_javascript_stops_page_scripts() {
        let base = site().await;
        let Some(browser) = browser().await else {
            return;
        };
        let with = browser.tab(1280, 900, true).await;
        with.goto(&format!("{base}/script")).await;
        // The control: where scripts run, this page renames itself, and its listeners hear
        // what `fill` does.
        assert_eq!(with.title().await, "js ran");
        with.fill("#q", "abc").await;
        with.fill("#day", "2026-12-01").await;
        assert!(with.text().await.contains("typed ABC on 2026-12-01"));

        let without = browser.tab(1280, 900, false).await;
        without.goto(&format!("{base}/script")).await;
        assert_eq!(without.title().await, "original");
        without.fill("#q", "abc").await;
        without.fill("#day", "2026-12-01").await;
        assert_eq!(without.value("#day").await.as_deref(), Some("2026-12-01"));
        assert!(without.text().await.contains("nothing typed"));
        // And again after a navigation: the switch holds for the tab, not one page.
        without.goto(&format!("{base}/form")).await;
        without.goto(&format!("{base}/script")).await;
        assert_eq!(without.title().await, "original");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn viewport_is_applied() {
        let base = site().await;
        let Some(browser) = browser().await else {
            return;
        };
        let phone = browser.tab(360, 740, false).await;
        phone.goto(&format!("{base}/form")).await;
        assert_eq!(phone.eval("window.innerWidth").await, 360);
        let text = phone.text().await;
        assert!(
            text.contains("narrow layout") && !text.contains("wide layout"),
            "{text}"
        );

        let desktop = browser.tab(1280, 900, true).await;
        desktop.goto(&format!("{base}/form")).await;
        assert_eq!(desktop.eval("window.innerWidth").await, 1280);
        let text = desktop.text().await;
        assert!(
            text.contains("wide layout") && !text.contains("narrow layout"),
            "{text}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tab_key_moves_the_focus() {
        let base = site().await;
        let Some(browser) = browser().await else {
            return;
        };
        let tab = browser.tab(360, 740, false).await;
        tab.goto(&format!("{base}/form")).await;
        assert_eq!(
            tab.press_tab_and_focused().await,
            r#"input#name[name="name"] "Name""#
        );
        assert_eq!(
            tab.press_tab_and_focused().await,
            r#"select#kind[name="kind"] "Kind""#
        );
        // A radio group is one stop; the visually hidden box is still reachable.
        let mut stops = Vec::new();
        for _ in 0..4 {
            stops.push(tab.press_tab_and_focused().await);
        }
        assert_eq!(
            stops,
            [
                r#"input#small[name="size"][type="radio"] "Small""#,
                r#"input#agree[name="agree"][type="checkbox"] "I agree""#,
                r#"input#news[name="news"][type="checkbox"] "Send me news""#,
                r#"button[type="submit"] "Send""#,
            ]
        );
    }

    #[test]
    fn violations_read_one_per_line_and_only_serious_ones_count() {
        let alt = AxeViolation {
            id: "image-alt".into(),
            impact: "critical".into(),
            help: "Images must have alternative text".into(),
            help_url: "https://rules.test/image-alt".into(),
            nodes: (1..=7).map(|i| format!("img:nth-child({i})")).collect(),
        };
        let region = AxeViolation {
            id: "region".into(),
            impact: "moderate".into(),
            nodes: vec!["p".into()],
            ..alt.clone()
        };
        let all = [alt, region];
        let found = serious(&all);
        assert_eq!(found.len(), 1);
        assert_eq!(
            report(found),
            "  [critical] image-alt: Images must have alternative text — img:nth-child(1), \
             img:nth-child(2), img:nth-child(3), img:nth-child(4), img:nth-child(5) and 2 more \
             (https://rules.test/image-alt)\n"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn axe_passes_a_clean_page() {
        let base = site().await;
        let Some(browser) = browser().await else {
            return;
        };
        for javascript in [true, false] {
            let tab = browser.tab(360, 740, javascript).await;
            tab.goto(&format!("{base}/form")).await;
            let Some(violations) = tab.axe().await else {
                return;
            };
            let serious = serious(&violations);
            assert!(
                serious.is_empty(),
                "javascript={javascript}:\n{}",
                report(serious)
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn axe_finds_defects() {
        let base = site().await;
        let Some(browser) = browser().await else {
            return;
        };
        for javascript in [true, false] {
            let tab = browser.tab(1280, 900, javascript).await;
            tab.goto(&format!("{base}/defective")).await;
            let Some(violations) = tab.axe().await else {
                return;
            };
            let found = serious(&violations);
            let ids: Vec<&str> = found.iter().map(|v| v.id.as_str()).collect();
            let image_alt = found
                .iter()
                .find(|v| v.id == "image-alt")
                .unwrap_or_else(|| panic!("no image-alt among {ids:?}"));
            assert_eq!(image_alt.impact, "critical");
            assert_eq!(image_alt.nodes, ["img"]);
            assert!(ids.contains(&"label"), "no label among {ids:?}");
            assert!(
                violations.iter().any(|v| v.id == "html-has-lang"),
                "no html-has-lang in\n{}",
                report(&violations)
            );
            assert!(report(found).contains("image-alt"));
        }
    }
}
