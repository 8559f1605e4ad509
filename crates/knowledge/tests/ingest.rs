//! Documents in, sections and passages out: each format's reader, format detection, hostile
//! input, and the splitter's guarantees.

use confab_knowledge::{Format, IngestError, Limits, Section, ingest, parse, passages};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn section(path: &[&str], text: &str) -> Section {
    Section { heading_path: path.iter().map(|s| (*s).to_owned()).collect(), text: text.to_owned() }
}

#[test]
fn markdown_headings_build_the_heading_path_and_front_matter_is_dropped() {
    let source = "---\nsecret: front matter\n---\n\nIntro before any heading.\n\n# Shipping guide\n\nWe ship\nworldwide.\n\n## Costs\n\n- Free over **50 EUR**\n- Otherwise `5 EUR`\n\n```sh\ncurl https://x\n\n\necho done\n```\n\n### Express\n\nNext day.\n\n## Returns\n\nThirty days.\n\n<div>raw html</div>\n";
    let document =
        parse("docs/shipping.md", source.as_bytes(), Format::Markdown, &Limits::default()).unwrap();
    assert_eq!(document.title, "Shipping guide");
    assert_eq!(
        document.sections,
        vec![
            section(&[], "Intro before any heading."),
            section(&["Shipping guide"], "We ship worldwide."),
            section(
                &["Shipping guide", "Costs"],
                "Free over 50 EUR\n\nOtherwise 5 EUR\n\ncurl https://x\necho done"
            ),
            section(&["Shipping guide", "Costs", "Express"], "Next day."),
            section(&["Shipping guide", "Returns"], "Thirty days."),
        ]
    );
}

#[test]
fn markdown_without_an_h1_is_titled_by_its_file_name() {
    let document = parse(
        "https://x.example/docs/faq.md?v=2",
        b"## Q\n\nA.",
        Format::Markdown,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(document.title, "faq");
    assert_eq!(document.sections, vec![section(&["Q"], "A.")]);
}

const PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>Acme &amp; Co — Help</title><style>body { color: red }</style>
<script>var navSecret = "script text";</script></head>
<body>
<header><h1>Site header</h1><a href="/">Home</a></header>
<nav><ul><li>Navigation link</li></ul></nav>
<div>Body text outside main.</div>
<main>
  <h1>Returns   policy</h1>
  <p>You can return   items within <b>30&nbsp;days</b>.<p>Refunds take a week.
  <noscript>Enable JavaScript</noscript>
  <h2>Damaged items</h2>
  <ul><li>Send a photo<li>Keep the box</ul>
  <table><tr><td>Cell one</td><td>Cell two</td></tr></table>
  <form><label>Search the site</label></form>
  <pre>line one
  line two</pre>
</main>
<aside>Related aside</aside>
<footer>Footer text</footer>
<script>document.write("late script")</script>
</body></html>"#;

#[test]
fn html_main_wins_and_navigation_scripts_and_footers_never_appear() {
    let document =
        parse("returns.html", PAGE.as_bytes(), Format::Html, &Limits::default()).unwrap();
    assert_eq!(document.title, "Acme & Co — Help");
    assert_eq!(
        document.sections,
        vec![
            section(
                &["Returns policy"],
                "You can return items within 30 days.\n\nRefunds take a week."
            ),
            section(
                &["Returns policy", "Damaged items"],
                "Send a photo\n\nKeep the box\n\nCell one Cell two\n\nline one\n  line two"
            ),
        ]
    );
    let all = passages(&document, &Limits::default()).unwrap();
    let text: String = all.iter().map(|p| format!("{:?} {}\n", p.heading_path, p.text)).collect();
    for absent in [
        "Site header",
        "Navigation",
        "script",
        "navSecret",
        "Footer",
        "aside",
        "Enable JavaScript",
        "Search the site",
        "outside main",
        "color",
    ] {
        assert!(!text.contains(absent), "{absent:?} leaked into {text}");
    }
}

#[test]
fn html_without_main_uses_the_body_without_its_navigation() {
    let page = "<html><body><svg><title>Logo</title></svg><nav>Menu</nav><h1>Prices</h1><div>Basic costs 5&euro;.<br>Pro costs 9&#8364;.</div><footer>(c) Acme</footer></body></html>";
    let document = parse("prices", page.as_bytes(), Format::Html, &Limits::default()).unwrap();
    assert_eq!(document.title, "Prices");
    assert_eq!(document.sections, vec![section(&["Prices"], "Basic costs 5€. Pro costs 9€.")]);
}

#[test]
fn an_html_page_in_a_declared_legacy_charset_is_decoded() {
    let page = b"<html><head><meta charset=\"windows-1252\"><title>Caf\xe9</title></head><body><p>Cr\xe8me br\xfbl\xe9e \x80 5</p></body></html>";
    let document = parse("menu.html", page, Format::Html, &Limits::default()).unwrap();
    assert_eq!(document.title, "Café");
    assert_eq!(document.sections, vec![section(&[], "Crème brûlée € 5")]);
    // Undeclared, the same bytes are mostly not UTF-8: binary.
    let page = b"<p>\xe9\xe8\xfb\xe9</p>";
    assert!(matches!(
        parse("menu.html", page, Format::Html, &Limits::default()),
        Err(IngestError::Binary { .. })
    ));
}

#[test]
fn plain_text_is_one_section_of_paragraphs() {
    let document = parse(
        "notes.txt",
        b"First  line\nstill first.\n\n\n\nSecond.\r\n\r\nThird.",
        Format::Text,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(document.title, "notes");
    assert_eq!(
        document.sections,
        vec![section(&[], "First line still first.\n\nSecond.\n\nThird.")]
    );
}

/// A one-page PDF with a title in its information dictionary, written with lopdf.
fn tiny_pdf(text: &str) -> Vec<u8> {
    pdf_with_padding(text, 0)
}

/// A one-page PDF whose (compressed) page content ends with `padding` spaces.
#[expect(clippy::unwrap_used, reason = "a test fixture; writing to a Vec does not fail")]
fn pdf_with_padding(text: &str, padding: usize) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc
        .add_object(dictionary! {"Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Courier"});
    let resources_id = doc.add_object(dictionary! {"Font" => dictionary! {"F1" => font_id}});
    let content = Content {
        operations: vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 12.into()]),
            Operation::new("Td", vec![72.into(), 700.into()]),
            Operation::new("Tj", vec![Object::string_literal(text)]),
            Operation::new("ET", vec![]),
        ],
    };
    let mut content = content.encode().unwrap();
    content.resize(content.len() + padding, b' ');
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page_id = doc
        .add_object(dictionary! {"Type" => "Page", "Parent" => pages_id, "Contents" => content_id});
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
            "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! {"Type" => "Catalog", "Pages" => pages_id});
    let info_id = doc.add_object(dictionary! {"Title" => Object::string_literal("Warranty terms")});
    doc.trailer.set("Root", catalog_id);
    doc.trailer.set("Info", info_id);
    doc.compress();
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

#[test]
fn pdf_text_comes_per_page_with_the_metadata_title() {
    let bytes = tiny_pdf("The warranty lasts two years.");
    let ingested = ingest("manual.pdf", None, &bytes, &Limits::default()).unwrap();
    assert_eq!(ingested.title, "Warranty terms");
    assert_eq!(ingested.passages.len(), 1);
    assert_eq!(ingested.passages[0].heading_path, ["Page 1"]);
    assert_eq!(ingested.passages[0].text, "The warranty lasts two years.");
}

#[test]
fn the_format_comes_from_the_content_type_then_the_name_then_the_first_bytes() {
    let detect = |name, content_type, bytes: &[u8]| {
        Format::detect(name, content_type, bytes).map_err(|e| e.to_string())
    };
    assert_eq!(detect("page.md", Some("text/html; charset=utf-8"), b""), Ok(Format::Html));
    assert_eq!(detect("a/b/README.MD", None, b""), Ok(Format::Markdown));
    assert_eq!(
        detect("https://x.example/guide.pdf?dl=1", Some("application/octet-stream"), b""),
        Ok(Format::Pdf)
    );
    assert_eq!(detect("download", None, b"%PDF-1.7\n"), Ok(Format::Pdf));
    assert_eq!(detect("https://x.example/help", None, b"\n <!DOCTYPE html><p>x"), Ok(Format::Html));
    assert_eq!(
        detect("photo.png", None, b"\x89PNG"),
        Err("photo.png: unsupported format (extension .png); Markdown, HTML, plain text and PDF are".to_owned())
    );
    assert_eq!(
        detect("feed", Some("application/json"), b"{}"),
        Err("feed: unsupported format (content type application/json); Markdown, HTML, plain text and PDF are".to_owned())
    );
}

#[test]
fn a_document_over_the_size_limit_is_refused_by_name_before_parsing() {
    let bytes = vec![b'a'; 6 * 1024 * 1024];
    let error = ingest("big/manual.txt", None, &bytes, &Limits::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "big/manual.txt: 6291456 bytes is more than the limit of 5242880 bytes"
    );
    let error = parse("big.md", &bytes, Format::Markdown, &Limits::default()).unwrap_err();
    assert!(matches!(error, IngestError::TooLarge { ref name, .. } if name == "big.md"));
}

#[test]
fn bytes_with_a_nul_or_mostly_not_utf8_are_binary() {
    let error = ingest("image.md", None, b"# Title\n\x00\x01\x02", &Limits::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "image.md: binary content, not Markdown text (a NUL byte at offset 8)"
    );
    let latin1 = b"caf\xe9 ".repeat(100);
    let error = ingest("old.txt", None, &latin1, &Limits::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "old.txt: binary content, not plain text text (100 of 500 characters are not UTF-8)"
    );
    // One stray byte in a long page is tolerated.
    let mut mostly = b"plain words ".repeat(100);
    mostly.push(0xff);
    assert!(ingest("ok.txt", None, &mostly, &Limits::default()).is_ok());
}

#[test]
fn two_hundred_thousand_nested_divs_end_in_an_error_not_a_stack_overflow() {
    let page = format!(
        "<html><body>{}deep text{}</body></html>",
        "<div>".repeat(200_000),
        "</div>".repeat(200_000)
    );
    let error = parse("bomb.html", page.as_bytes(), Format::Html, &Limits::default()).unwrap_err();
    assert_eq!(error.to_string(), "bomb.html: malformed HTML: elements nested more than 512 deep");
    // Unclosed paragraphs and list items close each other, so they do not count as nesting.
    let page = format!("<ul>{}</ul>{}", "<li>item".repeat(10_000), "<p>para".repeat(10_000));
    let document = parse("flat.html", page.as_bytes(), Format::Html, &Limits::default()).unwrap();
    assert_eq!(document.sections[0].text.matches("item").count(), 10_000);
}

#[test]
fn a_million_tiny_elements_end_in_an_error_or_bounded_output() {
    let page = "<b>x</b>".repeat(650_000);
    let error = parse("spam.html", page.as_bytes(), Format::Html, &Limits::default()).unwrap_err();
    assert_eq!(error.to_string(), "spam.html: malformed HTML: more than 200000 elements");
    // With the element limit lifted, the page still parses in one linear pass.
    let page = "<i></i>".repeat(1_000_000);
    let limits = Limits {
        max_html_elements: usize::MAX,
        max_document_bytes: 10 * 1024 * 1024,
        ..Limits::default()
    };
    let error = parse("empty.html", page.as_bytes(), Format::Html, &limits).unwrap_err();
    assert_eq!(error.to_string(), "empty.html: no text found");
}

#[test]
fn malformed_pdfs_are_errors_naming_the_file_not_panics() {
    let valid = tiny_pdf("Some text.");
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("garbage.pdf", b"%PDF-1.7\n this is not a pdf at all".to_vec()),
        ("truncated.pdf", valid[..valid.len() / 2].to_vec()),
        ("empty.pdf", Vec::new()),
        ("xref.pdf", {
            let mut bytes = valid.clone();
            let at = bytes.windows(4).position(|w| w == b"xref").unwrap();
            bytes[at..].iter_mut().take(30).for_each(|b| *b = b'9');
            bytes
        }),
    ];
    for (name, bytes) in inputs {
        match parse(name, &bytes, Format::Pdf, &Limits::default()) {
            Err(IngestError::Malformed { name: named, format: Format::Pdf, .. }) => {
                assert_eq!(named, name)
            }
            // lopdf may recover some files from a broken cross-reference table; then there is
            // text or there is none.
            Err(IngestError::Empty { name: named }) => assert_eq!(named, name),
            Ok(document) => assert!(!document.sections.is_empty(), "{name}"),
            Err(other) => panic!("{name}: {other}"),
        }
    }
    let error =
        parse("garbage.pdf", b"%PDF-1.7\n nope", Format::Pdf, &Limits::default()).unwrap_err();
    assert!(error.to_string().starts_with("garbage.pdf: malformed PDF: "), "{error}");
}

#[test]
fn a_pdf_whose_page_inflates_past_the_bound_is_refused() {
    // 60 MB of spaces deflate to some 60 KB: a small file, a large page.
    let bytes = pdf_with_padding("Bomb.", 60_000_000);
    assert!(bytes.len() < 1_000_000, "{}", bytes.len());
    let error = parse("bomb.pdf", &bytes, Format::Pdf, &Limits::default()).unwrap_err();
    assert_eq!(error.to_string(), "bomb.pdf: malformed PDF: couldn't decompress stream");
    // The same page within the bound is read.
    let bytes = pdf_with_padding("Not a bomb.", 1_000_000);
    let document = parse("padded.pdf", &bytes, Format::Pdf, &Limits::default()).unwrap();
    assert_eq!(document.sections[0].text, "Not a bomb.");
}

/// Random prose: paragraphs of sentences of words, some paragraphs far longer than a passage.
fn prose(rng: &mut StdRng, paragraphs: usize) -> Vec<String> {
    (0..paragraphs)
        .map(|_| {
            let sentences = if rng.random_bool(0.1) {
                rng.random_range(20..60)
            } else {
                rng.random_range(1..6)
            };
            (0..sentences)
                .map(|_| {
                    let words: Vec<String> = (0..rng.random_range(3..25))
                        .map(|_| {
                            (0..rng.random_range(1..12))
                                .map(|_| rng.random_range('a'..='z'))
                                .collect()
                        })
                        .collect();
                    format!("{}.", words.join(" "))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[test]
fn passages_stay_under_the_limit_cut_no_word_and_keep_every_paragraph_once() {
    let mut rng = StdRng::seed_from_u64(15);
    let limits = Limits { max_passage_chars: 300, ..Limits::default() };
    let sections: Vec<(Vec<String>, Vec<String>)> = (0..20)
        .map(|i| (vec![format!("Chapter {i}"), format!("Part {i}")], prose(&mut rng, 8)))
        .collect();
    let document = confab_knowledge::Document {
        name: "random.md".to_owned(),
        title: "Random".to_owned(),
        sections: sections
            .iter()
            .map(|(path, paragraphs)| Section {
                heading_path: path.clone(),
                text: paragraphs.join("\n\n"),
            })
            .collect(),
    };
    let all = passages(&document, &limits).unwrap();
    for passage in &all {
        assert!(passage.text.chars().count() <= 300, "{} chars", passage.text.chars().count());
    }
    for (path, paragraphs) in &sections {
        let under: Vec<&str> =
            all.iter().filter(|p| &p.heading_path == path).map(|p| p.text.as_str()).collect();
        // The words, in order, are exactly the section's words: none cut, lost or repeated.
        let passage_words: Vec<&str> = under.iter().flat_map(|t| t.split_whitespace()).collect();
        let source_words: Vec<&str> =
            paragraphs.iter().flat_map(|p| p.split_whitespace()).collect();
        assert_eq!(passage_words, source_words);
        for paragraph in paragraphs {
            if paragraph.chars().count() <= 300 {
                assert_eq!(
                    under.iter().filter(|t| t.contains(paragraph.as_str())).count(),
                    1,
                    "{paragraph}"
                );
            } else {
                // A long paragraph is cut at sentence ends: every piece of it ends one.
                for piece in under.iter().filter(|t| paragraph.starts_with(&t[..t.len().min(40)])) {
                    assert!(piece.ends_with('.'), "{piece}");
                }
            }
        }
    }
}

#[test]
fn a_word_longer_than_a_passage_is_the_only_thing_cut() {
    let limits = Limits { max_passage_chars: 10, ..Limits::default() };
    let document = parse(
        "hash.txt",
        "short words here abcdefghijklmnopqrstuvwxyz".as_bytes(),
        Format::Text,
        &limits,
    )
    .unwrap();
    let texts: Vec<String> =
        passages(&document, &limits).unwrap().into_iter().map(|p| p.text).collect();
    assert_eq!(texts, ["short", "words here", "abcdefghij", "klmnopqrst", "uvwxyz"]);
}

#[test]
fn too_many_passages_is_an_error_naming_the_file() {
    let limits =
        Limits { max_passages_per_document: 3, max_passage_chars: 30, ..Limits::default() };
    let text = "one paragraph of text.\n\n".repeat(5);
    let error = ingest("long.txt", None, text.as_bytes(), &limits).unwrap_err();
    assert_eq!(error.to_string(), "long.txt: more than the limit of 3 passages per document");
}

#[test]
fn markup_leftovers_make_no_passage_and_nothing_at_all_is_empty() {
    let document =
        parse("x.md", b"# A\n\n|\n\n# B\n\nYes.", Format::Markdown, &Limits::default()).unwrap();
    let all = passages(&document, &Limits::default()).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].heading_path, ["B"]);
    let error = ingest(
        "blank.html",
        None,
        b"<html><body><nav>only nav</nav></body></html>",
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(error.to_string(), "blank.html: no text found");
}

#[test]
fn pathological_markdown_parses_in_bounded_time_without_a_stack_overflow() {
    let limits = Limits::default();
    let inputs = [
        ("quotes.md", format!("{} deep quote\n", ">".repeat(100_000))),
        ("lists.md", (0..20_000).map(|depth| format!("{}- item\n", "  ".repeat(depth))).collect()),
        ("brackets.md", format!("{}text{}", "[".repeat(200_000), "](x)".repeat(1_000))),
        ("emphasis.md", "*_".repeat(500_000)),
        ("backticks.md", "`a``".repeat(300_000)),
    ];
    for (name, source) in inputs {
        match ingest(name, None, source.as_bytes(), &limits) {
            Ok(ingested) => assert!(!ingested.passages.is_empty(), "{name}"),
            Err(error) => assert!(error.to_string().starts_with(name), "{error}"),
        }
    }
}
