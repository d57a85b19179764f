package io.lakehouse.trino.pii;

/**
 * Why a value could not be decrypted, or why the keystore could not be used. {@link #configuration()}
 * tells a setup problem (no keystore, no master key, a damaged file) from a bad value.
 */
public final class PiiException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final boolean configuration;

    PiiException(String message, boolean configuration, Throwable cause) {
        super(message, cause);
        this.configuration = configuration;
    }

    static PiiException value(String message) {
        return new PiiException(message, false, null);
    }

    static PiiException value(String message, Throwable cause) {
        return new PiiException(message, false, cause);
    }

    static PiiException configuration(String message) {
        return new PiiException(message, true, null);
    }

    static PiiException configuration(String message, Throwable cause) {
        return new PiiException(message, true, cause);
    }

    public boolean configuration() {
        return configuration;
    }
}
