//! TwiML documents, written with quick-xml so that text is always escaped (`&`, `<` in a name
//! read aloud or sent back by SMS cannot break the document).

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};
use std::io::Cursor;

/// `<Response><Message>…</Message></Response>`, or an empty `<Response/>` (no reply).
pub fn message_response(text: Option<&str>) -> String {
    let mut writer = Writer::new(Cursor::new(Vec::new()));
    let written = (|| -> std::io::Result<()> {
        writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        match text {
            Some(text) => {
                writer.create_element("Response").write_inner_content(|w| {
                    w.create_element("Message")
                        .write_text_content(BytesText::new(text))?;
                    Ok(())
                })?;
            }
            None => {
                writer.create_element("Response").write_empty()?;
            }
        }
        Ok(())
    })();
    // Writing into memory cannot fail.
    debug_assert!(written.is_ok());
    String::from_utf8(writer.into_inner().into_inner()).unwrap_or_default()
}

/// What a voice answer asks the caller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Keys: exactly `n` digits, or fewer ended by `#`.
    Digits(u32),
    /// A sentence said aloud, transcribed.
    Speech,
    /// A sentence, or keys (`*` to hear again, `0` for a person).
    SpeechOrKeys,
}

/// One voice answer: sentences, then perhaps a `<Gather>` (whose sentences a key press
/// interrupts), then what happens after (silence, a transfer, the end).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VoiceAnswer {
    /// Said first, not interruptible.
    pub say: Vec<String>,
    /// Said inside the `<Gather>`, with what to expect and where the answer goes.
    pub gather: Option<(Vec<String>, Expect, String)>,
    /// After the `<Gather>` got nothing: where to go (a `<Redirect>`).
    pub on_silence: Option<String>,
    /// Transfer: the number and where the call goes when that leg ends.
    pub dial: Option<(String, String)>,
    pub hangup: bool,
}

/// How the voice speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    pub voice: String,
    pub language: String,
}

/// The TwiML of a voice answer. Only `<Say>` nests in `<Gather>`; every text is escaped.
pub fn voice_response(answer: &VoiceAnswer, speaker: &Speaker) -> String {
    let mut writer = Writer::new(Cursor::new(Vec::new()));
    let say = |w: &mut Writer<Cursor<Vec<u8>>>, text: &str| -> std::io::Result<()> {
        // A commune may blank a sentence out in its prompts: nothing to say then.
        if text.trim().is_empty() {
            return Ok(());
        }
        w.create_element("Say")
            .with_attribute(("voice", speaker.voice.as_str()))
            .with_attribute(("language", speaker.language.as_str()))
            .write_text_content(BytesText::new(text))?;
        Ok(())
    };
    let written = (|| -> std::io::Result<()> {
        writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        writer.create_element("Response").write_inner_content(|w| {
            for text in &answer.say {
                say(w, text)?;
            }
            if let Some((texts, expect, action)) = &answer.gather {
                let mut gather = w
                    .create_element("Gather")
                    .with_attribute(("action", action.as_str()))
                    .with_attribute(("method", "POST"));
                gather = match expect {
                    Expect::Digits(n) => {
                        let n = n.to_string();
                        gather
                            .with_attribute(("input", "dtmf"))
                            .with_attribute(("numDigits", n.as_str()))
                            .with_attribute(("finishOnKey", "#"))
                            .with_attribute(("timeout", if *n == *"1" { "6" } else { "10" }))
                    }
                    Expect::Speech | Expect::SpeechOrKeys => gather
                        .with_attribute((
                            "input",
                            if *expect == Expect::Speech {
                                "speech"
                            } else {
                                "dtmf speech"
                            },
                        ))
                        .with_attribute(("numDigits", "1"))
                        .with_attribute(("language", speaker.language.as_str()))
                        .with_attribute(("speechTimeout", "auto"))
                        .with_attribute(("timeout", "6")),
                };
                gather.write_inner_content(|g| {
                    for text in texts {
                        say(g, text)?;
                    }
                    Ok(())
                })?;
            }
            if let Some((number, action)) = &answer.dial {
                w.create_element("Dial")
                    .with_attribute(("action", action.as_str()))
                    .with_attribute(("method", "POST"))
                    .with_attribute(("timeout", "30"))
                    .write_inner_content(|d| {
                        d.create_element("Number")
                            .write_text_content(BytesText::new(number))?;
                        Ok(())
                    })?;
            }
            if let Some(url) = &answer.on_silence {
                w.create_element("Redirect")
                    .with_attribute(("method", "POST"))
                    .write_text_content(BytesText::new(url))?;
            }
            if answer.hangup {
                w.create_element("Hangup").write_empty()?;
            }
            Ok(())
        })?;
        Ok(())
    })();
    debug_assert!(written.is_ok());
    String::from_utf8(writer.into_inner().into_inner()).unwrap_or_default()
}

/// A voice answer as the provider reads it: what is said, where keys go, what happens next.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReadAnswer {
    pub says: Vec<String>,
    /// The `<Gather>`'s action, and whether it listens for speech.
    pub action: Option<String>,
    pub speech: bool,
    pub redirect: Option<String>,
    /// `<Dial>`: the number, and the action called when that leg ends.
    pub dial: Option<(String, String)>,
    pub hangup: bool,
}

/// Reads a voice TwiML document, refusing malformed XML and verbs nested where TwiML forbids
/// them (only `<Say>`, `<Play>`, `<Pause>` in `<Gather>`). Used by `guichet call` and tests.
pub fn read_voice_response(twiml: &str) -> Result<ReadAnswer, String> {
    use quick_xml::Reader;
    let mut reader = Reader::from_str(twiml);
    let mut read = ReadAnswer::default();
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("malformed TwiML: {e}"))?;
        match event {
            Event::Start(e) => {
                let name = element(&e, &stack, &mut read)?;
                stack.push(name);
                text.clear();
            }
            Event::Empty(e) => {
                element(&e, &stack, &mut read)?;
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.into_inner()),
            Event::GeneralRef(r) => {
                let entity = r.into_inner();
                text.push_str(match entity.as_ref() {
                    "apos" | "#39" => "'",
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    other => return Err(format!("unknown entity &{other};")),
                });
            }
            Event::End(e) => {
                match e.name().as_ref() {
                    "Say" => read.says.push(std::mem::take(&mut text)),
                    "Redirect" => read.redirect = Some(std::mem::take(&mut text)),
                    "Number" => {
                        if let Some(dial) = &mut read.dial {
                            dial.0 = std::mem::take(&mut text);
                        }
                    }
                    _ => {}
                }
                stack.pop();
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return Err("unclosed elements".into());
    }
    Ok(read)
}

/// Checks where an element stands and notes what it means; returns its name.
fn element(
    e: &quick_xml::events::BytesStart<'_>,
    stack: &[String],
    read: &mut ReadAnswer,
) -> Result<String, String> {
    let attr = |name: &str| -> Option<String> {
        e.attributes()
            .flatten()
            .find(|a| a.key.as_ref() == name)
            .and_then(|a| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.into_owned())
            })
    };
    let name = e.name().as_ref().to_owned();
    let allowed = match stack.last().map(String::as_str) {
        None => name == "Response",
        Some("Response") => [
            "Say", "Gather", "Redirect", "Dial", "Hangup", "Pause", "Play", "Reject",
        ]
        .contains(&name.as_str()),
        Some("Gather") => ["Say", "Play", "Pause"].contains(&name.as_str()),
        Some("Dial") => name == "Number",
        Some(_) => false,
    };
    if !allowed {
        return Err(format!(
            "<{name}> is not allowed inside <{}>",
            stack.last().map_or("(document)", String::as_str)
        ));
    }
    match name.as_str() {
        "Gather" => {
            read.action = attr("action");
            read.speech = attr("input").is_some_and(|i| i.contains("speech"));
        }
        "Dial" => read.dial = Some((String::new(), attr("action").unwrap_or_default())),
        "Hangup" => read.hangup = true,
        _ => {}
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_escaped() {
        assert_eq!(
            message_response(Some("RDV <mardi> & \"mercredi\"")),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>RDV &lt;mardi&gt; &amp; &quot;mercredi&quot;</Message></Response>"
        );
        assert_eq!(
            message_response(None),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response/>"
        );
    }
}
