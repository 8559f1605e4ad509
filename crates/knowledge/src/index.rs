//! [`SiteIndex`]: one site's passages in an in-RAM tantivy index, searched with BM25.
//!
//! The index holds no text of its own to return: it answers passage ids, and the caller reads
//! the passages from the store (or a cache of them). Its searchable fields are the text (with
//! the heading path written above it), the document title and the heading path, each analysed
//! the same way: words split on anything not a letter or digit, accents folded, lower-cased,
//! the stop words of [`vocabulary::STOP_WORDS`] dropped (function words and chat fillers such
//! as "how do I", "please"), English stems, so "shipping" finds "ships". Title and headings
//! weigh a little on top of the text: a passage under "Returns" is about returns even where
//! its text says "send it back".
//!
//! A query is a visitor's words, never query syntax: it goes through the same analyser and
//! becomes an OR of term queries, so quotes, `AND`, `(` or a lone `-` can never be an error.
//! Its words and phrases are also expanded with general English for customer help ("money
//! back" also searches "refund", "broken" also "damaged"; [`vocabulary::SYNONYMS`] and
//! [`vocabulary::PHRASES`]), weighing less than the visitor's own words. In a conversation
//! ([`SiteIndex::search_turns`]) the visitor's previous message adds its words at
//! [`CONTEXT_WEIGHT`].
//!
//! Every choice here was measured with `scripts/eval-knowledge` (see `tests/knowledge`):
//! together they raised hit@3 from 0.53 to 0.70 on its 230 questions.

use std::collections::HashMap;
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term, doc};

use crate::vectors::{Vectors, fuse};
use crate::vocabulary;

/// The analyser's name in the index's tokenizer manager.
const ANALYZER: &str = "confab_en";

/// Memory the writer may fill before it writes a segment. 30 MB holds a 10,000-passage site
/// (some 10 MB of text) in one segment, so a rebuild at start-up makes one segment and needs no
/// merge; tantivy refuses less than 15 MB per indexing thread. The arena grows as it is used,
/// so a small update costs far less, and the writer exists only during an update.
const WRITER_MEMORY_BYTES: usize = 30_000_000;

/// Distinct query terms used at most: a visitor's message may be long, and each term is a
/// posting list to walk. The first ones are kept.
const MAX_QUERY_TERMS: usize = 32;

/// Bytes of the query read at most (a long message's opening says what it is about).
const MAX_QUERY_BYTES: usize = 4_096;

/// How much a word of the earlier message weighs against one of the latest message. A
/// follow-up ("and to Northern Ireland?", "can I open it again later?") says little of its
/// own, so the message before it must count for much of the subject; 0.7 beat 0.3 and 0.5 on
/// the follow-ups of `tests/knowledge` while the latest message's own words still decide.
pub const CONTEXT_WEIGHT: f32 = 0.7;

/// Weights of a match in the title and in the heading path, on top of the text, which holds
/// the heading path too (see [`SiteIndex::add`]). Measured on `tests/knowledge`: headings in
/// the text with these boosts beat separate fields boosted 1.5 (hit@3 0.70 against 0.60 with
/// every other setting the same); a larger boost lets one word of a heading outrank the
/// passage that answers.
const TITLE_BOOST: f32 = 0.5;
const HEADINGS_BOOST: f32 = 0.5;

/// The second ranking of [`SiteIndex::search_hybrid`]: the site's passage embeddings, the
/// question's (of [`SiteIndex::embedding_text`], by the model that made them), and the cosine
/// below which a passage is not proposed (see [`Vectors::search`]).
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    pub vectors: &'a Vectors,
    pub query: &'a [f32],
    pub min_similarity: f32,
}

/// A passage to index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPassage {
    /// The passage's id in the store: what [`SiteIndex::search`] answers.
    pub id: u64,
    /// The id of the document it comes from: what [`SiteIndex::remove_document`] takes.
    pub document: u64,
    pub title: String,
    pub heading_path: Vec<String>,
    pub text: String,
}

/// A passage found by a search, best first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: u64,
    pub score: f32,
}

/// The index failed. In RAM this is not expected; the source says why.
#[derive(Debug, thiserror::Error)]
#[error("knowledge index: {0}")]
pub struct IndexError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl From<tantivy::TantivyError> for IndexError {
    fn from(error: tantivy::TantivyError) -> Self {
        Self(Box::new(error))
    }
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    document: Field,
    title: Field,
    headings: Field,
    text: Field,
}

/// One site's passages, searchable. `Send + Sync`: searches run concurrently with each other
/// and with an update, and see an update once the call that made it has returned.
pub struct SiteIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    /// The analyser without stop words, for matching the expansion table's phrases.
    plain: TextAnalyzer,
    /// Stemmed words and phrases of [`vocabulary`]'s tables, each with the analysed terms it
    /// adds to a query.
    expansions: HashMap<Vec<String>, Vec<String>>,
    /// Held for the length of an update: tantivy allows one writer per index at a time.
    updating: Mutex<()>,
}

impl std::fmt::Debug for SiteIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteIndex").field("passages", &self.len()).finish_non_exhaustive()
    }
}

impl SiteIndex {
    /// An empty index.
    pub fn new() -> Result<Self, IndexError> {
        let mut schema = Schema::builder();
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                // No positions: no phrase queries, so a smaller index and faster updates.
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields = Fields {
            id: schema.add_u64_field("id", NumericOptions::default().set_fast()),
            document: schema.add_u64_field("document", NumericOptions::default().set_indexed()),
            title: schema.add_text_field("title", text_options.clone()),
            headings: schema.add_text_field("headings", text_options.clone()),
            text: schema.add_text_field("text", text_options),
        };
        let index = Index::create_in_ram(schema.build());
        let analyzer = self::analyzer(true);
        index.tokenizers().register(ANALYZER, analyzer.clone());
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let mut plain = self::analyzer(false);
        let expansions = expansions(&mut plain, &mut analyzer.clone());
        Ok(Self { index, reader, fields, analyzer, plain, expansions, updating: Mutex::new(()) })
    }

    /// Add passages. Passages are not deduplicated by id: to change a document, use
    /// [`SiteIndex::replace_document`].
    pub fn add(&self, passages: &[IndexedPassage]) -> Result<(), IndexError> {
        self.update(None, passages)
    }

    /// Remove every passage of a document.
    pub fn remove_document(&self, document: u64) -> Result<(), IndexError> {
        self.update(Some(document), &[])
    }

    /// Replace a document's passages with `passages` in one step: no search sees the
    /// document missing or twice.
    pub fn replace_document(
        &self,
        document: u64,
        passages: &[IndexedPassage],
    ) -> Result<(), IndexError> {
        self.update(Some(document), passages)
    }

    fn update(&self, remove: Option<u64>, add: &[IndexedPassage]) -> Result<(), IndexError> {
        // A panic while updating leaves the index as it was (nothing committed), so a poisoned
        // lock is safe to take.
        let _updating = self.updating.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut writer =
            self.index.writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY_BYTES)?;
        if let Some(document) = remove {
            writer.delete_term(Term::from_field_u64(self.fields.document, document));
        }
        for passage in add {
            writer.add_document(doc!(
                self.fields.id => passage.id,
                self.fields.document => passage.document,
                self.fields.title => passage.title.as_str(),
                self.fields.headings => passage.heading_path.join("\n"),
                self.fields.text => indexed_text(passage),
            ))?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        Ok(())
    }

    /// The passages in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` passages that best match `query` (a visitor's words), best first. Any words
    /// will do: a query with nothing to search for (only stop words or punctuation) finds
    /// nothing.
    pub fn search(&self, query: &str, k: usize) -> Result<Vec<Hit>, IndexError> {
        self.search_conversation(query, "", k)
    }

    /// Like [`SiteIndex::search`] for the latest message of a conversation, with words of the
    /// `earlier` messages (the caller picks how much) weighing [`CONTEXT_WEIGHT`] as much, so
    /// that a follow-up such as "how long does that take?" still finds what the conversation
    /// is about, while the latest message decides.
    pub fn search_conversation(
        &self,
        latest: &str,
        earlier: &str,
        k: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        self.search_weighted(&[(latest, 1.0), (earlier, CONTEXT_WEIGHT)], k)
    }

    /// The `k` passages that best answer the latest of a conversation's visitor messages:
    /// `user_messages` holds them oldest first, the latest last (assistant replies are left
    /// out; pass every visitor message, or the last few). The latest decides; the one before
    /// it weighs [`CONTEXT_WEIGHT`], so that a follow-up such as "and for members?" still finds
    /// what the conversation is about, and older ones are not read: a conversation moves on.
    /// No messages, or only empty ones, find nothing.
    pub fn search_turns(&self, user_messages: &[&str], k: usize) -> Result<Vec<Hit>, IndexError> {
        match user_messages {
            [] => Ok(Vec::new()),
            [latest] => self.search(latest, k),
            [.., previous, latest] => self.search_conversation(latest, previous, k),
        }
    }

    /// Hybrid retrieval: like [`SiteIndex::search_turns`], fused by reciprocal rank ([`fuse`])
    /// with the passages whose embeddings are closest to the question's (see [`Dense`]).
    /// Without them (`None`: no embeddings, or the embedding call failed) it is
    /// [`SiteIndex::search_turns`].
    pub fn search_hybrid(
        &self,
        user_messages: &[&str],
        dense: Option<Dense<'_>>,
        k: usize,
    ) -> Result<Vec<Hit>, IndexError> {
        let Some(dense) = dense else { return self.search_turns(user_messages, k) };
        let candidates = HYBRID_CANDIDATES.max(k);
        let words = self.search_turns(user_messages, candidates)?;
        let meaning = dense.vectors.search(dense.query, candidates, dense.min_similarity);
        Ok(fuse(&[&words, &meaning], k))
    }

    /// What hybrid retrieval embeds for a conversation's visitor messages (oldest first): the
    /// latest, after the one before it for a follow-up, at most [`MAX_QUERY_BYTES`] of each.
    pub fn embedding_text(user_messages: &[&str]) -> String {
        let start = user_messages.len().saturating_sub(2);
        user_messages[start..]
            .iter()
            .map(|text| prefix(text, MAX_QUERY_BYTES))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Messages, most important first, each with the weight of its words.
    fn search_weighted(&self, messages: &[(&str, f32)], k: usize) -> Result<Vec<Hit>, IndexError> {
        let mut terms = Vec::new();
        for (text, weight) in messages {
            self.terms(text, *weight, &mut terms);
        }
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(terms.len() * 3);
        for (term, weight) in &terms {
            for (field, boost) in [
                (self.fields.text, 1.0),
                (self.fields.title, TITLE_BOOST),
                (self.fields.headings, HEADINGS_BOOST),
            ] {
                let query = TermQuery::new(
                    Term::from_field_text(field, term),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(query), boost * weight)),
                ));
            }
        }
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&BooleanQuery::new(clauses), &TopDocs::with_limit(k).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let ids = searcher.segment_reader(address.segment_ord).fast_fields().u64("id")?;
            if let Some(id) = ids.first(address.doc_id) {
                hits.push(Hit { id, score });
            }
        }
        Ok(hits)
    }

    /// Adds the text's analysed terms not already in `terms`, with `weight`, in order, until
    /// there are [`MAX_QUERY_TERMS`]; then the terms its words and phrases expand to (see
    /// [`vocabulary`]), with [`vocabulary::EXPANSION_WEIGHT`] of `weight`, at most
    /// [`MAX_EXPANSION_TERMS`] of them.
    fn terms(&self, text: &str, weight: f32, terms: &mut Vec<(String, f32)>) {
        let text = prefix(text, MAX_QUERY_BYTES);
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        while terms.len() < MAX_QUERY_TERMS && stream.advance() {
            let token = &stream.token().text;
            if !terms.iter().any(|(term, _)| term == token) {
                terms.push((token.clone(), weight));
            }
        }
        let expansion_weight = weight * vocabulary::EXPANSION_WEIGHT;
        let words = stemmed_words(&mut self.plain.clone(), text);
        let mut added = 0;
        for start in 0..words.len() {
            if added == MAX_EXPANSION_TERMS {
                break;
            }
            for length in 1..=MAX_PHRASE_WORDS.min(words.len() - start) {
                let Some(expanded) = self.expansions.get(&words[start..start + length]) else {
                    continue;
                };
                for term in expanded {
                    if added < MAX_EXPANSION_TERMS && !terms.iter().any(|(known, _)| known == term)
                    {
                        terms.push((term.clone(), expansion_weight));
                        added += 1;
                    }
                }
            }
        }
    }
}

/// At most `max` bytes of the start of `text`, cut between characters.
pub(crate) fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Passages each ranking of a hybrid search proposes for fusion (when `k` is smaller): a
/// passage the other ranking puts first should not be lost for ranking 21st in this one.
const HYBRID_CANDIDATES: usize = 20;

/// Words of a phrase in the expansion table, at most.
const MAX_PHRASE_WORDS: usize = 3;

/// Terms added by expansion to the words of one message, at most, on top of
/// [`MAX_QUERY_TERMS`].
const MAX_EXPANSION_TERMS: usize = 24;

/// The analysed words of `text`, in order.
fn stemmed_words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        words.push(stream.token().text.clone());
    }
    words
}

/// The expansion table: each word of a synonym group adds the others, each phrase its words,
/// keyed by their stemmed words (`plain`) and adding analysed terms (`analyzer`: stop words
/// dropped, so "e bike" adds "bike" only).
fn expansions(
    plain: &mut TextAnalyzer,
    analyzer: &mut TextAnalyzer,
) -> HashMap<Vec<String>, Vec<String>> {
    let mut table: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    let mut add = |key: &str, adds: &str, table: &mut HashMap<Vec<String>, Vec<String>>| {
        let key = stemmed_words(plain, key);
        let key_terms = stemmed_words(analyzer, &key.join(" "));
        let entry = table.entry(key).or_default();
        for term in stemmed_words(analyzer, adds) {
            if !entry.contains(&term) && !key_terms.contains(&term) {
                entry.push(term);
            }
        }
    };
    for group in vocabulary::SYNONYMS {
        for word in *group {
            for other in *group {
                if other != word {
                    add(word, other, &mut table);
                }
            }
        }
    }
    for (phrase, adds) in vocabulary::PHRASES {
        add(phrase, adds, &mut table);
    }
    table.retain(|key, adds| !key.is_empty() && !adds.is_empty());
    table
}

/// Words split on anything not a letter or digit, tokens over 40 bytes dropped (hashes and
/// base64, never words), accents folded, lower-cased, stop words dropped (when `stop_words`;
/// see [`vocabulary::STOP_WORDS`]), stemmed (English).
fn analyzer(stop_words: bool) -> TextAnalyzer {
    let stop_words = if stop_words { vocabulary::STOP_WORDS } else { &[] };
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(AsciiFoldingFilter)
        .filter(LowerCaser)
        .filter(StopWordFilter::remove(stop_words.iter().map(|word| (*word).to_owned())))
        .filter(Stemmer::new(Language::English))
        .build()
}

/// What the text field indexes: the heading path, a line each, then the text. A passage's
/// own words rarely repeat its subject ("Orders placed before noon...": under "Next-day
/// delivery"), and BM25 weighs a heading word best beside the words it belongs with, in one
/// field with one length; the separate title and headings fields add a smaller boost.
fn indexed_text(passage: &IndexedPassage) -> String {
    let mut text = String::with_capacity(
        passage.heading_path.iter().map(|heading| heading.len() + 1).sum::<usize>()
            + passage.text.len(),
    );
    for heading in &passage.heading_path {
        text.push_str(heading);
        text.push('\n');
    }
    text.push_str(&passage.text);
    text
}
