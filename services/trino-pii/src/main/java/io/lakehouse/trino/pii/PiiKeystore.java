package io.lakehouse.trino.pii;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.Key;
import java.util.Arrays;
import java.util.Base64;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.LongSupplier;
import javax.crypto.Cipher;
import javax.crypto.spec.GCMParameterSpec;
import javax.crypto.spec.SecretKeySpec;

/**
 * The read side of services/lakehouse/privacy/_keystore.py, byte for byte: a value
 * {@code pii:v1:<subject>:<field>:<base64url(nonce|ciphertext)>} is AES-256-GCM under the subject's
 * data key (DEK) with {@code <subject>:<field>} as associated data; DEKs are AES-key-wrapped
 * (RFC 3394) by a key-encryption key (KEK); KEKs are AES-GCM sealed by the 32-byte master key with
 * their id as associated data.
 *
 * <p>{@link #decrypt} decides as Python's {@code Keystore.decrypt} under the platform's
 * {@code pii_decrypt} (which maps only {@code KeyShredded} to NULL), in the same order: not a
 * {@code pii:v1} value, a payload that is not base64, a subject without a data key, a tampered
 * ciphertext or a plaintext that is not UTF-8 are errors; a forgotten subject (its DEK destroyed)
 * is NULL. The file is re-read when it changed, checked at most once per {@code refreshNanos}
 * (and at once for a subject it does not know), and unwrapped DEKs of subjects gone from it are
 * dropped: a {@code lakehouse gdpr forget} is NULL here within about a second. Thread-safe.
 */
public final class PiiKeystore {
    public static final String PREFIX = "pii:v1:";
    public static final long REFRESH_NANOS = 1_000_000_000L; // Python's REFRESH_SECONDS
    static final long MAX_FILE_BYTES = 1L << 30;
    static final int MAX_MASTER_KEY_FILE_BYTES = 4096;

    private static final byte[] PREFIX_BYTES = PREFIX.getBytes(StandardCharsets.US_ASCII);
    private static final int TAG_BITS = 128;
    private static final int NONCE = 12;
    private static final ThreadLocal<Cipher> GCM = ThreadLocal.withInitial(() -> cipher("AES/GCM/NoPadding"));

    /** The parsed file: wrapped DEKs by subject, the forgotten subjects, KEKs (opened lazily). */
    private record State(
            Object signature,
            Map<String, Object> deks,
            Map<String, Object> shredded,
            List<Object> keks,
            ConcurrentHashMap<String, byte[]> openedKeks) {}

    private final Path path;
    private final SecretKeySpec master;
    private final LongSupplier clock;
    private final long refreshNanos;
    private final Object lock = new Object();
    private final ConcurrentHashMap<String, SecretKeySpec> cache = new ConcurrentHashMap<>(); // subject -> DEK
    private volatile State state;
    private volatile long checkedAt;

    public PiiKeystore(Path path, byte[] masterKey, LongSupplier clock, long refreshNanos) {
        if (masterKey.length != 32) {
            throw PiiException.configuration("the master key must be 32 bytes (base64 of 32 random bytes)");
        }
        this.path = Objects.requireNonNull(path);
        this.master = new SecretKeySpec(masterKey.clone(), "AES");
        this.clock = clock;
        this.refreshNanos = refreshNanos;
    }

    /** The keystore at {@code keystoreFile}, with the master key held (as base64) in {@code masterKeyFile}. */
    public static PiiKeystore open(Path keystoreFile, Path masterKeyFile) {
        return new PiiKeystore(keystoreFile, readMasterKey(masterKeyFile), System::nanoTime, REFRESH_NANOS);
    }

    /** The master key as {@code create_master_key} writes it: base64 of 32 bytes, surrounding whitespace ignored. */
    public static byte[] readMasterKey(Path file) {
        byte[] raw;
        try {
            if (Files.size(file) > MAX_MASTER_KEY_FILE_BYTES) {
                throw PiiException.configuration(file + " is too large to hold a master key");
            }
            raw = Files.readAllBytes(file);
        } catch (IOException exc) {
            throw PiiException.configuration("cannot read the master key file " + file + ": " + exc, exc);
        }
        byte[] key;
        try {
            key = Base64.getDecoder().decode(new String(raw, StandardCharsets.US_ASCII).strip());
        } catch (IllegalArgumentException exc) {
            throw PiiException.configuration(file + " does not hold a master key (base64 of 32 random bytes)", exc);
        }
        if (key.length != 32) {
            throw PiiException.configuration(file + " does not hold a 32-byte master key");
        }
        return key;
    }

    // -- the file ---------------------------------------------------------------------------------

    private Object signature() {
        try {
            return FileSignature.of(path);
        } catch (IOException exc) {
            throw PiiException.configuration("cannot read the keystore " + path + ": " + exc, exc);
        }
    }

    @SuppressWarnings("unchecked")
    private State load(Object signature) {
        if (signature == null) {
            throw PiiException.configuration("the keystore " + path + " does not exist");
        }
        Object parsed;
        try {
            if (Files.size(path) > MAX_FILE_BYTES) {
                throw PiiException.configuration("the keystore " + path + " is larger than " + MAX_FILE_BYTES + " bytes");
            }
            parsed = Json.parse(new String(Files.readAllBytes(path), StandardCharsets.UTF_8));
        } catch (IOException | IllegalArgumentException exc) {
            throw PiiException.configuration("cannot read the keystore " + path + ": " + exc.getMessage(), exc);
        }
        if (parsed instanceof Map<?, ?> map
                && map.get("deks") instanceof Map<?, ?> deks
                && map.get("shredded") instanceof Map<?, ?> shredded
                && map.get("keks") instanceof List<?> keks) {
            return new State(signature, (Map<String, Object>) deks, (Map<String, Object>) shredded,
                    (List<Object>) keks, new ConcurrentHashMap<>());
        }
        throw PiiException.configuration("the keystore " + path + " lacks deks, shredded or keks: damaged");
    }

    /** Re-read the file if it changed (at most once per refresh interval unless {@code force}). */
    void refresh(boolean force) {
        long now = clock.getAsLong();
        if (!force && state != null && now - checkedAt < refreshNanos) {
            return;
        }
        synchronized (lock) {
            checkedAt = now;
            Object signature = signature();
            State current = state;
            if (current != null && Objects.equals(signature, current.signature())) {
                return;
            }
            // the signature is taken before the read: a change racing the read is seen next time
            State fresh = load(signature);
            cache.keySet().removeIf(subject -> !fresh.deks().containsKey(subject));
            state = fresh;
        }
    }

    // -- keys -------------------------------------------------------------------------------------

    private byte[] kek(State current, String kid) {
        byte[] opened = current.openedKeks().get(kid);
        if (opened != null) {
            return opened;
        }
        Map<?, ?> entry = null;
        for (Object candidate : current.keks()) {
            if (candidate instanceof Map<?, ?> map && kid.equals(map.get("kid"))) {
                entry = map;
                break;
            }
        }
        if (entry == null) {
            throw PiiException.configuration("key-encryption key " + kid + " is missing from " + path);
        }
        if (!(entry.get("wrapped") instanceof String wrapped)) {
            throw PiiException.configuration("key-encryption key " + kid + " in " + path + " is damaged");
        }
        try {
            byte[] sealed = PythonBase64.decode(wrapped);
            opened = gcmOpen(master, sealed, kid.getBytes(StandardCharsets.UTF_8));
        } catch (IllegalArgumentException | GeneralSecurityException exc) {
            throw PiiException.configuration(
                    "the keystore does not open with this master key (or it was tampered with)", exc);
        }
        current.openedKeks().put(kid, opened);
        return opened;
    }

    /** The subject's DEK; null if the subject was forgotten. */
    private SecretKeySpec dataKey(String subject) {
        refresh(false);
        SecretKeySpec cached = cache.get(subject);
        if (cached != null) {
            return cached;
        }
        State current = state;
        Object entry = current.deks().get(subject);
        if (entry == null && current.shredded().containsKey(subject)) {
            return null;
        }
        if (entry == null) {
            refresh(true); // created by another process a moment ago?
            current = state;
            entry = current.deks().get(subject);
            if (entry == null && current.shredded().containsKey(subject)) {
                return null;
            }
        }
        if (entry == null) {
            throw PiiException.value("no data key for " + subject);
        }
        if (!(entry instanceof Map<?, ?> map && map.get("kek") instanceof String kid
                && map.get("wrapped") instanceof String wrapped)) {
            throw PiiException.configuration("the data key of " + subject + " in " + path + " is damaged");
        }
        SecretKeySpec dek;
        try {
            Cipher unwrap = cipher("AESWrap"); // RFC 3394, as cryptography's aes_key_unwrap
            unwrap.init(Cipher.UNWRAP_MODE, new SecretKeySpec(kek(current, kid), "AES"));
            Key key = unwrap.unwrap(PythonBase64.decode(wrapped), "AES", Cipher.SECRET_KEY);
            dek = new SecretKeySpec(key.getEncoded(), "AES");
        } catch (IllegalArgumentException | GeneralSecurityException exc) {
            throw PiiException.configuration("the data key of " + subject + " does not unwrap: keystore damaged", exc);
        }
        synchronized (lock) {
            if (state.deks().containsKey(subject)) { // not forgotten while it was unwrapped
                cache.put(subject, dek);
            }
        }
        return dek;
    }

    // -- values -----------------------------------------------------------------------------------

    /**
     * The UTF-8 plaintext of a {@code pii:v1} value (its bytes as they arrive from Trino); null for
     * null, and for a value of a forgotten subject. Throws {@link PiiException} otherwise.
     */
    public byte[] decrypt(byte[] value) {
        if (value == null) {
            return null;
        }
        if (!startsWith(value, PREFIX_BYTES) || count(value, (byte) ':') < 4) {
            throw PiiException.value("not a value this keystore encrypted");
        }
        int subjectEnd = indexOf(value, (byte) ':', PREFIX_BYTES.length);
        int fieldEnd = indexOf(value, (byte) ':', subjectEnd + 1);
        String subject = utf8(value, PREFIX_BYTES.length, subjectEnd, "its subject");
        String field = utf8(value, subjectEnd + 1, fieldEnd, "its field");
        byte[] sealed;
        try {
            sealed = PythonBase64.decode(value, fieldEnd + 1, value.length);
        } catch (IllegalArgumentException exc) {
            throw PiiException.value("a " + field + " value of " + subject + " is not base64: tampered", exc);
        }
        SecretKeySpec dek = dataKey(subject);
        if (dek == null) {
            return null; // forgotten: its data key was destroyed
        }
        byte[] aad = Arrays.copyOfRange(value, PREFIX_BYTES.length, fieldEnd); // "<subject>:<field>"
        byte[] plain;
        try {
            plain = gcmOpen(dek, sealed, aad);
        } catch (GeneralSecurityException | IllegalArgumentException exc) {
            throw PiiException.value(
                    "a " + field + " value of " + subject + " does not decrypt: tampered, or moved from another row", exc);
        }
        utf8(plain, 0, plain.length, "the decrypted " + field + " value of " + subject);
        return plain;
    }

    private static byte[] gcmOpen(SecretKeySpec key, byte[] sealed, byte[] aad) throws GeneralSecurityException {
        if (sealed.length < NONCE) {
            throw new IllegalArgumentException("shorter than a nonce");
        }
        Cipher gcm = GCM.get();
        gcm.init(Cipher.DECRYPT_MODE, key, new GCMParameterSpec(TAG_BITS, sealed, 0, NONCE));
        gcm.updateAAD(aad);
        return gcm.doFinal(sealed, NONCE, sealed.length - NONCE);
    }

    private static Cipher cipher(String transformation) {
        try {
            return Cipher.getInstance(transformation);
        } catch (GeneralSecurityException exc) {
            throw new IllegalStateException("this JDK lacks " + transformation, exc);
        }
    }

    private static String utf8(byte[] bytes, int from, int to, String what) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes, from, to - from))
                    .toString();
        } catch (CharacterCodingException exc) {
            throw PiiException.value(what + " is not UTF-8", exc);
        }
    }

    private static boolean startsWith(byte[] value, byte[] prefix) {
        return value.length >= prefix.length && Arrays.equals(value, 0, prefix.length, prefix, 0, prefix.length);
    }

    private static int count(byte[] value, byte b) {
        int n = 0;
        for (byte v : value) {
            if (v == b) {
                n++;
            }
        }
        return n;
    }

    private static int indexOf(byte[] value, byte b, int from) {
        for (int i = from; i < value.length; i++) {
            if (value[i] == b) {
                return i;
            }
        }
        return -1;
    }
}
