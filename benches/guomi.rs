//! The national algorithms on one core, each beside its international counterpart in
//! the same run (criterion runs one thread):
//! - signature verification: SM2 with SM3 (GB/T 32918, RustCrypto `sm2`) against
//!   ES256 (ECDSA P-256 with SHA-256, RustCrypto `p256`, what jsonwebtoken uses), over
//!   a token's signing input;
//! - signing, the same pair;
//! - bulk encryption of a 1 MiB body: SM4-CBC, SM4-GCM (`sm4` with `cbc` and
//!   `aes-gcm`'s generic GCM) against AES-256-GCM (`aes-gcm`), in MB/s.
//!
//!   cargo bench --bench guomi

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hallgate::guomi::sm2::{DEFAULT_USER_ID, Sm2Signer};
use hallgate::guomi::sm4::{Iv, Mode, Sm4Cipher, Sm4Key};
use p256::ecdsa::signature::{Signer, Verifier};

const INPUT: &[u8] = b"eyJhbGciOiJTTTIiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJkaXN0cmljdC1hIiwiYXVkIjoiZ3ctdGVzdCIsImlhdCI6MTc2NDgxNDQwMCwiZXhwIjoxNzY0ODE0NzAwLCJqdGkiOiIwMTkzYWQ0Zi0xYjJjLTc4OWEtYmNkZS0xMjM0NTY3ODlhYmMifQ";

fn signatures(c: &mut Criterion) {
    let sm2 = Sm2Signer::random(DEFAULT_USER_ID).unwrap();
    let sm2_pub = sm2.verifier();
    let sm2_sig = sm2.sign(INPUT);
    let es = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let es_pub = *es.verifying_key();
    let es_sig: p256::ecdsa::Signature = es.sign(INPUT);

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sm2-sm3", |b| {
        b.iter(|| sm2_pub.verify(INPUT, &sm2_sig).expect("verifies"))
    });
    g.bench_function("es256", |b| {
        b.iter(|| es_pub.verify(INPUT, &es_sig).expect("verifies"))
    });
    g.finish();

    let mut g = c.benchmark_group("sign");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sm2-sm3", |b| b.iter(|| sm2.sign(INPUT)));
    g.bench_function("es256", |b| {
        b.iter(|| -> p256::ecdsa::Signature { es.sign(INPUT) })
    });
    g.finish();
}

fn bulk(c: &mut Criterion) {
    let body = vec![0x5au8; 1 << 20];
    let key = Sm4Key::from_text("0123456789abcdeffedcba9876543210").unwrap();
    let cbc = Sm4Cipher::new(key.clone(), Mode::Cbc, Iv::Prefix);
    let gcm = Sm4Cipher::new(key, Mode::Gcm, Iv::Prefix);
    let aes = {
        use aes_gcm::KeyInit;
        aes_gcm::Aes256Gcm::new(&[7u8; 32].into())
    };
    let mut g = c.benchmark_group("encrypt-1MiB");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(20);
    g.bench_function("sm4-cbc", |b| b.iter(|| cbc.encrypt(&body)));
    g.bench_function("sm4-gcm", |b| b.iter(|| gcm.encrypt(&body)));
    g.bench_function("aes-256-gcm", |b| {
        use aes_gcm::aead::Aead;
        b.iter(|| {
            aes.encrypt(&[1u8; 12].into(), body.as_slice())
                .expect("encrypts")
        })
    });
    g.finish();
    let sealed = cbc.encrypt(&body);
    let mut g = c.benchmark_group("decrypt-1MiB");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(20);
    g.bench_function("sm4-cbc", |b| {
        b.iter(|| cbc.decrypt(&sealed).expect("decrypts"))
    });
    g.finish();
}

criterion_group!(benches, signatures, bulk);
criterion_main!(benches);
