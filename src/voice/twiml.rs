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
