package io.lakehouse.trino.pii;

import io.trino.spi.Plugin;
import java.util.Set;

/** Gives Trino {@code pii_decrypt(varchar) -> varchar} (see {@link PiiFunctions}). */
public final class PiiPlugin implements Plugin {
    @Override
    public Set<Class<?>> getFunctions() {
        return Set.of(PiiFunctions.class);
    }
}
