//! Hybrid retrieval's second half: [`Vectors`], a site's passage embeddings searched by cosine
//! similarity, and [`fuse`], which merges its ranking with BM25's by reciprocal rank.
//!
//! The search is exhaustive: every vector is compared with the question's, beside an embedding
//! call to the upstream that takes tens of milliseconds; an approximate index (HNSW) would save
//! little of the request's time and cost memory and a build on every change. What bounds an
//! exhaustive search is reading the vectors from memory (10,000 of 384 floats are 15 MB, more
//! than any cache), so they are kept as bytes: each vector is normalised, then scaled so its
//! largest value is ±127 and rounded (scalar quantisation, as vector databases do), a quarter of
//! the memory and of the bytes read. Its cosine with a question (quantised the same way) is
//! then an integer dot product times the two scales; the rounding moves a cosine by well under
//! a hundredth, which reorders only near-ties (measured with `scripts/eval-knowledge-embeddings`:
//! the same hit@3 as with floats).

use crate::Hit;

/// Reciprocal rank fusion's constant: a passage ranked `r` (from 1) in a list scores
/// `1 / (RRF_K + r)` there. 60 is the value of the paper that introduced it (Cormack et al.,
/// 2009) and what most search engines use; it lets a passage that both lists rank well beat
/// one that only one list ranks first.
pub const RRF_K: f32 = 60.0;

/// A vector that cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VectorError {
    #[error("an embedding of {got} dimensions where the site's have {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error(
        "an embedding with no length, more than {MAX_DIMENSIONS} dimensions, or a value that is not a finite number"
    )]
    Invalid,
}

/// The default floor of [`Vectors::search`] for hybrid retrieval
/// (`[knowledge.embeddings] min_similarity`): above every greeting and off-topic question
/// measured with all-MiniLM-L6-v2 but two (0.32 and 0.33), below 97 % of the evaluation set's
/// best passages (whose cosines start at 0.33). Other models spread cosines otherwise: measure
/// yours (`scripts/eval-knowledge --embeddings URL --min-similarity F`).
pub const DEFAULT_MIN_SIMILARITY: f32 = 0.3;

/// The longest embedding taken (the largest models make 4,096 dimensions); a longer one is
/// refused, which also keeps a dot product of bytes far from overflowing its 32-bit lanes.
pub const MAX_DIMENSIONS: usize = 16_384;

/// Passage embeddings of one model, all of one length.
#[derive(Clone, Default)]
pub struct Vectors {
    dimensions: usize,
    ids: Vec<u64>,
    /// The vectors, quantised ([`quantise`]), one after another.
    data: Vec<i8>,
    /// Each vector's scale: its value `i` is `data[i] * scale`.
    scales: Vec<f32>,
}

impl std::fmt::Debug for Vectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vectors")
            .field("passages", &self.ids.len())
            .field("dimensions", &self.dimensions)
            .finish()
    }
}

impl Vectors {
    /// No vectors yet; the first one added sets the length.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the embedding of passage `id`. A zero vector is kept (it matches nothing).
    pub fn push(&mut self, id: u64, vector: &[f32]) -> Result<(), VectorError> {
        if vector.is_empty()
            || vector.len() > MAX_DIMENSIONS
            || vector.iter().any(|x| !x.is_finite())
        {
            return Err(VectorError::Invalid);
        }
        if self.ids.is_empty() {
            self.dimensions = vector.len();
        } else if vector.len() != self.dimensions {
            return Err(VectorError::Dimensions { expected: self.dimensions, got: vector.len() });
        }
        let scale = quantise(vector, &mut self.data);
        self.scales.push(scale);
        self.ids.push(id);
        Ok(())
    }

    /// Passages with a vector.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The length of every vector (0 when there is none).
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The `k` passages whose vectors are closest to `query` by cosine, best first, of those
    /// with a cosine of at least `min_similarity` and above 0 (a vector at a right angle to the
    /// question's, or further, shares nothing with it). A query of another length (a model
    /// changed under the site) or with nothing in it finds nothing.
    ///
    /// Real models put unrelated texts at a small positive cosine (all-MiniLM-L6-v2: 0.14 to
    /// 0.33 between "hi" or "tell me a joke" and a shop's help pages, against 0.33 to 0.8 for
    /// the passages that answer its questions), so without a floor every question, a greeting
    /// too, would find `k` passages.
    pub fn search(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<Hit> {
        if k == 0 || query.len() != self.dimensions || query.iter().any(|x| !x.is_finite()) {
            return Vec::new();
        }
        let mut quantised = Vec::with_capacity(query.len());
        let query_scale = quantise(query, &mut quantised);
        if query_scale == 0.0 {
            return Vec::new();
        }
        let mut scored: Vec<Hit> = self
            .data
            .chunks_exact(self.dimensions)
            .zip(self.ids.iter().zip(&self.scales))
            .map(|(vector, (&id, &scale))| {
                #[expect(clippy::cast_precision_loss, reason = "a dot product of bytes")]
                let dot = dot(vector, &quantised) as f32;
                Hit { id, score: dot * scale * query_scale }
            })
            .filter(|hit| hit.score > 0.0 && hit.score >= min_similarity)
            .collect();
        let best_first = |a: &Hit, b: &Hit| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id));
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, best_first);
            scored.truncate(k);
        }
        scored.sort_unstable_by(best_first);
        scored
    }
}

/// Appends `vector`, normalised and scaled so that its largest value is ±127, rounded, to
/// `out`, and returns the scale back (0 for a zero vector, which is stored as zeros).
fn quantise(vector: &[f32], out: &mut Vec<i8>) -> f32 {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    let largest = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if !(norm > 0.0 && largest > 0.0) {
        out.extend(std::iter::repeat_n(0, vector.len()));
        return 0.0;
    }
    let to_byte = 127.0 / largest;
    #[expect(clippy::cast_possible_truncation, reason = "rounded values within ±127")]
    out.extend(vector.iter().map(|x| (x * to_byte).round().clamp(-127.0, 127.0) as i8));
    // Back from bytes to the normalised vector's values.
    largest / 127.0 / norm
}

/// Merges rankings (each best first) by reciprocal rank: a passage scores the sum of
/// `1 / (RRF_K + rank)` over the lists that hold it, and the `k` best are returned, best first
/// (ties by the first list's order). Scores of different rankers cannot be compared (BM25's
/// are unbounded, cosines are at most 1); ranks can.
pub fn fuse(rankings: &[&[Hit]], k: usize) -> Vec<Hit> {
    let mut fused: Vec<(Hit, usize)> = Vec::new();
    for ranking in rankings {
        for (rank, hit) in ranking.iter().enumerate() {
            let score = 1.0 / (RRF_K + rank as f32 + 1.0);
            match fused.iter_mut().find(|(known, _)| known.id == hit.id) {
                Some((known, _)) => known.score += score,
                None => {
                    let order = fused.len();
                    fused.push((Hit { id: hit.id, score }, order));
                }
            }
        }
    }
    fused.sort_by(|(a, a_order), (b, b_order)| {
        b.score.total_cmp(&a.score).then(a_order.cmp(b_order))
    });
    fused.into_iter().take(k).map(|(hit, _)| hit).collect()
}

/// What is embedded of a passage, at ingestion: its document's title and its heading path,
/// a line each, above its text, so that a passage whose own words never name its subject
/// ("Orders placed before noon...") is still near a question about it ("next-day delivery").
/// Each line of title and headings keeps at most [`MAX_LABEL_BYTES`], and the whole at most
/// [`MAX_EMBEDDED_BYTES`], so that no passage is too long for an embedding model (whose
/// refusal would stop every passage after it from being embedded).
pub fn embedding_passage_text(title: &str, heading_path: &[String], text: &str) -> String {
    let mut embedded = String::with_capacity(title.len() + text.len() + 64);
    for line in std::iter::once(title).chain(heading_path.iter().map(String::as_str)) {
        let line = crate::index::prefix(line.trim(), MAX_LABEL_BYTES);
        if !line.is_empty() {
            embedded.push_str(line);
            embedded.push('\n');
        }
    }
    embedded.push_str(text);
    crate::index::prefix(&embedded, MAX_EMBEDDED_BYTES).to_owned()
}

/// A title's or heading's bytes embedded with a passage, at most.
const MAX_LABEL_BYTES: usize = 200;

/// The bytes embedded for a passage, at most (passages are at most 1,200 characters): well
/// under any embedding model's input limit (8,191 tokens for OpenAI's, 256 word pieces read by
/// all-MiniLM-L6-v2, which cuts the rest itself).
const MAX_EMBEDDED_BYTES: usize = 8_192;

/// A dot product of bytes in 32 lanes of 32-bit sums, which the compiler turns into SIMD
/// multiply-adds. Measured with `bench_retrieval` (10,000 vectors of 384 bytes): 0.8 ms, against
/// 1.0 ms in 16 lanes, 2.1 ms as one running sum of widened bytes and 2.4 ms in pairs of 16-bit
/// products; floats took about 0.9 ms, reading four times the memory.
fn dot(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 32];
    let (a_chunks, b_chunks) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: i32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        let x: &[i8; 32] = x.try_into().unwrap_or(&[0; 32]);
        let y: &[i8; 32] = y.try_into().unwrap_or(&[0; 32]);
        for lane in 0..32 {
            lanes[lane] += i32::from(x[lane]) * i32::from(y[lane]);
        }
    }
    lanes.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(hits: &[Hit]) -> Vec<u64> {
        hits.iter().map(|hit| hit.id).collect()
    }

    #[test]
    fn the_closest_vectors_come_first_whatever_their_length() {
        let mut vectors = Vectors::new();
        vectors.push(1, &[1.0, 0.0, 0.0]).unwrap();
        vectors.push(2, &[0.0, 10.0, 0.0]).unwrap();
        vectors.push(3, &[3.0, 3.0, 0.0]).unwrap();
        vectors.push(4, &[0.0, 0.0, 0.0]).unwrap();
        assert_eq!(ids(&vectors.search(&[0.0, 1.0, 0.0], 2, 0.0)), vec![2, 3]);
        assert_eq!(
            ids(&vectors.search(&[5.0, 0.1, 0.0], 4, 0.0)),
            vec![1, 3, 2],
            "not the zero one"
        );
        assert_eq!(ids(&vectors.search(&[-1.0, 0.0, 0.0], 4, 0.0)), Vec::<u64>::new(), "none near");
        assert_eq!(ids(&vectors.search(&[5.0, 0.1, 0.0], 4, 0.5)), vec![1, 3], "above the floor");
        let best = vectors.search(&[0.0, 2.0, 0.0], 1, 0.0);
        assert!((best[0].score - 1.0).abs() < 1e-3, "a cosine: {best:?}");
        let between = vectors.search(&[1.0, 1.0, 0.0], 1, 0.0);
        assert_eq!(between[0].id, 3);
        assert!((between[0].score - 1.0).abs() < 1e-3, "{between:?}");
    }

    #[test]
    fn a_vector_of_another_length_is_refused_and_a_query_of_one_finds_nothing() {
        let mut vectors = Vectors::new();
        vectors.push(1, &[1.0; 9]).unwrap();
        assert_eq!(
            vectors.push(2, &[1.0; 8]),
            Err(VectorError::Dimensions { expected: 9, got: 8 })
        );
        assert_eq!(vectors.push(3, &[]), Err(VectorError::Invalid));
        assert_eq!(vectors.push(4, &[f32::NAN; 9]), Err(VectorError::Invalid));
        assert_eq!(vectors.len(), 1);
        assert!(vectors.search(&[1.0; 8], 3, 0.0).is_empty());
        assert!(vectors.search(&[0.0; 9], 3, 0.0).is_empty());
        assert_eq!(ids(&vectors.search(&[1.0; 9], 3, 0.0)), vec![1]);
    }

    #[test]
    fn the_dot_product_counts_every_value() {
        let a: Vec<i8> = (0..37).map(|i| i - 18).collect();
        let b: Vec<i8> = (0..37).map(|i| 127 - i).collect();
        let expected: i32 = a.iter().zip(&b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
        assert_eq!(dot(&a, &b), expected);
        assert_eq!(dot(&[-127; 40], &[-127; 40]), 40 * 127 * 127);
    }

    #[test]
    fn quantised_cosines_stay_within_a_hundredth_of_the_exact_ones() {
        let mut state = 7_u64;
        let mut random = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let mut vectors = Vectors::new();
        let stored: Vec<Vec<f32>> = (0..50).map(|_| (0..384).map(|_| random()).collect()).collect();
        for (id, vector) in stored.iter().enumerate() {
            vectors.push(id as u64, vector).unwrap();
        }
        let query: Vec<f32> = (0..384).map(|_| random()).collect();
        let cosine = |a: &[f32], b: &[f32]| {
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            dot / norm(a) / norm(b)
        };
        for hit in vectors.search(&query, 50, 0.0) {
            let exact = cosine(&stored[hit.id as usize], &query);
            assert!((hit.score - exact).abs() < 0.01, "{} against {exact}", hit.score);
        }
    }

    #[test]
    fn fusion_favours_what_both_rankings_find() {
        let hit = |id| Hit { id, score: 0.0 };
        let words = [hit(1), hit(2), hit(3)];
        let meaning = [hit(4), hit(3), hit(1)];
        // 1: ranks 1 and 3; 3: ranks 3 and 2; 4 and 2: one list each.
        assert_eq!(ids(&fuse(&[&words, &meaning], 4)), vec![1, 3, 4, 2]);
        assert_eq!(ids(&fuse(&[&words, &[]], 2)), vec![1, 2], "one ranking alone keeps its order");
        assert!(fuse(&[&[], &[]], 3).is_empty());
    }
}
