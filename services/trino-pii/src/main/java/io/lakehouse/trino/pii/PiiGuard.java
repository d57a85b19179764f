package io.lakehouse.trino.pii;

import java.util.function.Supplier;

/**
 * {@code pii_decrypt} without Trino: who asks is checked first, and only a reader reaches the
 * keystore. For anyone else nothing is opened, parsed or decrypted, not even a NULL is passed
 * through: the answer is a denial whatever the value.
 */
public final class PiiGuard {
    private final Supplier<PiiReaders> readers;
    private final Supplier<PiiKeystore> keystore;

    public PiiGuard(Supplier<PiiReaders> readers, Supplier<PiiKeystore> keystore) {
        this.readers = readers;
        this.keystore = keystore;
    }

    /** {@link PiiKeystore#decrypt} of {@code value} for {@code user} if a reader; a denial otherwise. */
    public byte[] decrypt(String user, byte[] value) {
        readers.get().require(user);
        return value == null ? null : keystore.get().decrypt(value);
    }
}
