import { z } from 'zod';

/**
 * SPDX 2.3 document rules, written from the specification (chapters 6–11) for tests: the
 * official JSON schema cannot be vendored into this repository, so these are the checks it
 * makes that matter for ossify's SBOM, plus the cross-reference rules a schema cannot state
 * (unique SPDXIDs, relationships that point at real elements, SHA1 on every file, the package
 * verification code when files were analysed).
 */
const spdxId = z.string().regex(/^SPDXRef-[A-Za-z0-9.-]+$/, 'SPDXRef- followed by letters, digits, "." or "-"');
const hex = z.string().regex(/^[0-9a-f]+$/);
const algorithm = z.enum([
  'SHA1', 'SHA224', 'SHA256', 'SHA384', 'SHA512', 'SHA3-256', 'SHA3-384', 'SHA3-512',
  'BLAKE2b-256', 'BLAKE2b-384', 'BLAKE2b-512', 'BLAKE3', 'MD2', 'MD4', 'MD5', 'MD6', 'ADLER32',
]);
const checksum = z.strictObject({ algorithm, checksumValue: hex });
const noAssertionOr = (s: z.ZodString) => z.union([z.literal('NOASSERTION'), z.literal('NONE'), s]);
const creator = z.string().regex(/^(Person|Organization|Tool): \S.*$/);

const pkg = z
  .looseObject({
    SPDXID: spdxId,
    name: z.string().min(1),
    versionInfo: z.string().min(1).optional(),
    downloadLocation: noAssertionOr(z.string().min(1)),
    filesAnalyzed: z.boolean().optional(),
    packageVerificationCode: z
      .strictObject({ packageVerificationCodeValue: z.string().regex(/^[0-9a-f]{40}$/), packageVerificationCodeExcludedFiles: z.array(z.string()).optional() })
      .optional(),
    checksums: z.array(checksum).optional(),
    externalRefs: z
      .array(
        z.strictObject({
          referenceCategory: z.enum(['SECURITY', 'PACKAGE-MANAGER', 'PACKAGE_MANAGER', 'PERSISTENT-ID', 'PERSISTENT_ID', 'OTHER']),
          referenceType: z.string().min(1),
          referenceLocator: z.string().regex(/^\S+$/),
          comment: z.string().optional(),
        }),
      )
      .optional(),
    primaryPackagePurpose: z
      .enum(['APPLICATION', 'FRAMEWORK', 'LIBRARY', 'CONTAINER', 'OPERATING_SYSTEM', 'DEVICE', 'FIRMWARE', 'SOURCE', 'ARCHIVE', 'FILE', 'INSTALL', 'OTHER'])
      .optional(),
    licenseConcluded: z.string().optional(),
    licenseDeclared: z.string().optional(),
    copyrightText: z.string().optional(),
  })
  .refine((p) => p.filesAnalyzed === false || p.packageVerificationCode !== undefined || p.filesAnalyzed === undefined, {
    message: 'a package whose files were analysed needs a packageVerificationCode (§7.9)',
  });

const file = z.looseObject({
  SPDXID: spdxId,
  fileName: z.string().regex(/^\.\//, 'file names are relative and start with ./ (§8.1)'),
  checksums: z.array(checksum).refine((c) => c.some((x) => x.algorithm === 'SHA1'), 'every file needs a SHA1 checksum (§8.4)'),
});

const relationship = z.looseObject({
  spdxElementId: z.string(),
  relatedSpdxElement: z.string(),
  relationshipType: z.enum([
    'DESCRIBES', 'DESCRIBED_BY', 'CONTAINS', 'CONTAINED_BY', 'DEPENDS_ON', 'DEPENDENCY_OF', 'GENERATED_FROM', 'GENERATES',
    'BUILD_TOOL_OF', 'DEV_TOOL_OF', 'BUILD_DEPENDENCY_OF', 'RUNTIME_DEPENDENCY_OF', 'PACKAGE_OF', 'VARIANT_OF', 'COPY_OF',
    'FILE_ADDED', 'FILE_DELETED', 'FILE_MODIFIED', 'EXPANDED_FROM_ARCHIVE', 'DYNAMIC_LINK', 'STATIC_LINK', 'DATA_FILE_OF',
    'ANCESTOR_OF', 'DESCENDANT_OF', 'PREREQUISITE_FOR', 'HAS_PREREQUISITE', 'OTHER', 'CONTAINS', 'PATCH_FOR', 'PATCH_APPLIED',
  ]),
});

export const Spdx23Document = z
  .looseObject({
    spdxVersion: z.literal('SPDX-2.3'),
    dataLicense: z.literal('CC0-1.0'),
    SPDXID: z.literal('SPDXRef-DOCUMENT'),
    name: z.string().min(1),
    documentNamespace: z.string().regex(/^[a-z][a-z0-9+.-]*:[^#\s]+$/, 'an absolute URI without a # part (§6.5)'),
    creationInfo: z.looseObject({ created: z.string().regex(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/), creators: z.array(creator).min(1) }),
    documentDescribes: z.array(z.string()).optional(),
    packages: z.array(pkg).default([]),
    files: z.array(file).default([]),
    relationships: z.array(relationship).default([]),
  })
  .superRefine((doc, ctx) => {
    const ids = [doc.SPDXID, ...doc.packages.map((p) => p.SPDXID), ...doc.files.map((f) => f.SPDXID)];
    const seen = new Set<string>();
    for (const id of ids) {
      if (seen.has(id)) ctx.addIssue({ code: 'custom', message: `duplicate SPDXID ${id}` });
      seen.add(id);
    }
    const known = (id: string) => seen.has(id) || id === 'NOASSERTION' || id === 'NONE' || /^DocumentRef-[^:]+:SPDXRef-/.test(id);
    for (const r of doc.relationships) {
      if (!known(r.spdxElementId)) ctx.addIssue({ code: 'custom', message: `relationship from unknown element ${r.spdxElementId}` });
      if (!known(r.relatedSpdxElement)) ctx.addIssue({ code: 'custom', message: `relationship to unknown element ${r.relatedSpdxElement}` });
    }
    const described = doc.documentDescribes ?? doc.relationships.filter((r) => r.spdxElementId === 'SPDXRef-DOCUMENT' && r.relationshipType === 'DESCRIBES').map((r) => r.relatedSpdxElement);
    if (described.length === 0) ctx.addIssue({ code: 'custom', message: 'the document describes nothing (documentDescribes or a DESCRIBES relationship, §11)' });
  });
